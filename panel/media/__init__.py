"""Camera, microphone and speaker, and the WebRTC sessions that carry them.

Layout, one job per module:

- ``pattern``: the synthetic test picture (frame counter and capture clock, readable by machines);
- ``annexb``: splitting an H.264 Annex-B byte stream into access units, without decoding;
- ``sources``: video sources (synthetic, V4L2, H.264 pipe/file/V4L2 pass-through);
- ``capture``: one capture per physical device, shared by every consumer, retried when it fails;
- ``encoder``: the software encoder (libx264/libvpx via PyAV), once per stream;
- ``hub``: the encoded video stream fanned out to every viewer, and the audio devices;
- ``audio``: microphone and speaker (sounddevice), synthetic tone, recording sink, output mixer;
- ``echo``: echo cancellation and noise suppression (WebRTC AEC3/NS), the speaker's output as reference;
- ``voice``: the microphone processed and Opus-encoded once, shared by every session;
- ``tracks``: aiortc tracks that hand out shared packets/frames;
- ``tokens``: call-scoped, expiring, revocable session credentials;
- ``sessions``: WebRTC sessions (create/answer, limits, data channel, mute, video switch, cleanup);
- ``ice``: which STUN/TURN servers a new session gets (background probes) and a bound on gathering;
- ``whip``: publishing the entrance once to SFUs over WHIP (RFC 9725), with recovery and backoff;
- ``service``: wiring for the daemon; ``whep``: the WHEP routes.

The heavy dependencies (aiortc, av, numpy, sounddevice, pywebrtc-audio) are the ``media`` extra: nothing
outside this package imports it at module level, so the panel runs without them.
"""
