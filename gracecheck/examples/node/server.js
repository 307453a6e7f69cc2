// Node.js http with the usual graceful stop: node server.js PORT [GRACE]
// SIGTERM calls server.close(): it stops accepting, and since Node 19 also
// closes idle keep-alive connections; the process exits when the last
// connection ends (nothing is left on the event loop).  With GRACE (seconds),
// the common addition: after GRACE, server.closeAllConnections() and exit 1.
'use strict';
const http = require('http');
const port = Number(process.argv[2]);
const grace = process.argv[3] === undefined ? null : Number(process.argv[3]);

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const done = () => {
    res.writeHead(200, {'Content-Type': 'text/plain'});
    res.end('hello from node\n');
  };
  if (url.pathname === '/sleep') {
    setTimeout(done, Number(url.searchParams.get('ms') || 0));
  } else if (url.pathname === '/') {
    done();
  } else {
    res.writeHead(404); res.end();
  }
});

process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  if (grace !== null) {
    setTimeout(() => { server.closeAllConnections(); process.exit(1); }, grace * 1000).unref();
  }
});

server.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
