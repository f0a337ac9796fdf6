// The Socket.IO 4.8 peer of benches/compare.sh: plain room fan-out, the way a Socket.IO app
// would do what Locus does. Events: "join" (room, ack) joins and acks "ok"; "pub" (room,
// payload) emits "m" with the payload to the room's other members.
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 4500);
const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
  maxHttpBufferSize: 1e6,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
  socket.on("pub", (room, payload) => {
    socket.to(room).emit("m", payload);
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`socketio peer listening on 127.0.0.1:${port}`);
});
