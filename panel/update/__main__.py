"""The vendor's side of updates (docs/updates.md), on the signing machine, never on a panel:

    python -m panel.update keygen KEY                      # KEY (private, 0600) and KEY.pub (ship it)
    python -m panel.update build VERSION OUT.tar.gz [--source DIR]
    python -m panel.update sign KEY OUT.tar.gz VERSION URL # prints the update command's fields as JSON
    python -m panel.update rotate OLD_KEY NEW_KEY.pub      # prints the rotation {key, signature} as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from ._release import build_release, key_id, load_public, public_b64, sha256_file, sign_manifest, sign_rotation


def _private(path: Path) -> Ed25519PrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"{path}: not an Ed25519 private key")
    return key


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m panel.update", description="sign panel releases (vendor side)")
    sub = p.add_subparsers(dest="cmd", required=True)
    kg = sub.add_parser("keygen", help="a new Ed25519 vendor key")
    kg.add_argument("key", type=Path)
    b = sub.add_parser("build", help="a release archive of this tree's panel package")
    b.add_argument("version")
    b.add_argument("out", type=Path)
    b.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2])
    s = sub.add_parser("sign", help="the signed fields of an update command")
    s.add_argument("key", type=Path)
    s.add_argument("archive", type=Path)
    s.add_argument("version")
    s.add_argument("url")
    r = sub.add_parser("rotate", help="the old key's signature over a new public key")
    r.add_argument("old_key", type=Path)
    r.add_argument("new_pub", type=Path)
    args = p.parse_args(argv)

    if args.cmd == "keygen":
        key = Ed25519PrivateKey.generate()
        fd = os.open(args.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        Path(f"{args.key}.pub").write_text(public_b64(key.public_key()) + "\n")
        print(f"key id {key_id(key.public_key())}: {args.key} (keep it offline), {args.key}.pub (ship it)")
    elif args.cmd == "build":
        out = build_release(args.source, args.version, args.out)
        print(f"{out}: {out.stat().st_size} bytes, sha256 {sha256_file(out)}")
    elif args.cmd == "sign":
        key = _private(args.key)
        size, digest = args.archive.stat().st_size, sha256_file(args.archive)
        print(json.dumps({"version": args.version, "url": args.url, "size": size, "sha256": digest,
                          "signature": sign_manifest(key, args.version, args.url, size, digest),
                          "key_id": key_id(key.public_key())}))
    else:
        new = load_public(args.new_pub.read_text())
        print(json.dumps({"key": public_b64(new), "signature": sign_rotation(_private(args.old_key), new)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
