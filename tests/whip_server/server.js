// The WHIP front end the SFU tests run (tests/sfu.py): one endpoint publishing into a Janus VideoRoom.
//   node server.js JANUS_WS_URL HOST PORT ENDPOINT_ID ROOM TOKEN [ICE_SERVER_URI...]
// Prints "ready" once it is connected to Janus and listening.
import http from 'http';
import express from 'express';
import { JanusWhipServer } from './whip.js';

const [janus, host, port, id, room, token, ...ice] = process.argv.slice(2);
const app = express();
const server = new JanusWhipServer({
	janus: { address: janus },
	rest: { app: app, basePath: '/whip' },
	iceServers: ice.map(uri => ({ uri })),
	debug: 'verb'  // a line per request: the tests count the POSTs
});
await server.start();
server.createEndpoint({ id: id, room: parseInt(room, 10), token: token, label: 'panel' });
const listener = http.createServer({}, app).listen(parseInt(port, 10), host, () => console.log('ready'));
process.on('SIGTERM', () => { listener.close(); server.destroy().finally(() => process.exit(0)); });
