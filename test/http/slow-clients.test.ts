/**
 * Slow and oversized clients on a listening server, over raw sockets (issue 10 item 10): trickled headers,
 * a trickled body and a silent connection are closed once the configured timeouts pass; a body declared or
 * sent beyond the upload limits is answered 413 at once, without the server reading the rest. The timeouts
 * are configured short here; the tests wait for the socket to close, they do not time it.
 */
import { connect, type Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { cleanup, testConfig } from './helpers.js';

let config: Config;
let app: FastifyInstance;
let port: number;

beforeAll(async () => {
  config = await testConfig({
    QAAS_HEADERS_TIMEOUT_MS: '400',
    QAAS_REQUEST_TIMEOUT_MS: '1200',
    QAAS_IDLE_TIMEOUT_MS: '800',
    QAAS_KEEP_ALIVE_TIMEOUT_MS: '300',
    QAAS_MAX_UPLOAD_BYTES: String(64 * 1024),
    QAAS_MAX_UPLOAD_FILES: '4',
    QAAS_MAX_UPLOAD_TOTAL_BYTES: String(128 * 1024),
  });
  app = await buildApp(config, { logger: false });
  await app.listen({ port: 0, host: '127.0.0.1' });
  port = (app.server.address() as { port: number }).port;
});

afterAll(async () => {
  await app?.close();
  if (config) await cleanup(config);
});

interface Connection {
  socket: Socket;
  /** Everything the server sent, once it closed the connection. */
  closed: Promise<string>;
}

async function open(): Promise<Connection> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let received = '';
  socket.on('data', (chunk) => (received += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  const closed = new Promise<string>((resolve) => socket.once('close', () => resolve(received)));
  return { socket, closed };
}

/** Writes `piece` every `everyMs` until the server closes the connection. */
function trickle(connection: Connection, piece: string, everyMs: number): void {
  const timer = setInterval(() => {
    if (connection.socket.destroyed || !connection.socket.writable) clearInterval(timer);
    else connection.socket.write(piece);
  }, everyMs);
  void connection.closed.then(() => clearInterval(timer));
}

const boundary = 'slowloris';
const multipartHead = (length: number) =>
  `POST /v1/models HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=${boundary}\r\n` +
  `Content-Length: ${length}\r\n\r\n`;
const partHead = `--${boundary}\r\nContent-Disposition: form-data; name="f"; filename="group1-shard1of1.bin"\r\n\r\n`;

describe('slow clients', () => {
  it('closes a connection whose headers trickle in (slowloris)', async () => {
    const connection = await open();
    connection.socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n');
    trickle(connection, 'X-Slow: 1\r\n', 50);
    const received = await connection.closed;
    expect(received).toMatch(/^HTTP\/1\.1 408/);
  });

  it('closes a connection whose body trickles in', async () => {
    const connection = await open();
    connection.socket.write(multipartHead(100_000) + partHead);
    trickle(connection, 'x', 50);
    const received = await connection.closed;
    expect(received).not.toMatch(/^HTTP\/1\.1 20/);
    expect(connection.socket.destroyed).toBe(true);
  });

  it('closes a connection that never sends a byte', async () => {
    const connection = await open();
    await connection.closed;
    expect(connection.socket.destroyed).toBe(true);
  });

  it('closes a kept-alive connection that sends no next request', async () => {
    const connection = await open();
    connection.socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    const received = await connection.closed;
    expect(received).toMatch(/^HTTP\/1\.1 200/);
  });
});

describe('oversized bodies', () => {
  it('answers 413 to a declared Content-Length over the limits before any body is sent', async () => {
    const connection = await open();
    connection.socket.write(multipartHead(10 ** 12));
    const received = await connection.closed;
    expect(received).toMatch(/^HTTP\/1\.1 413/);
    expect(received).toMatch(/connection: close/i);
    expect(received).toContain('upload-too-large');
  });

  it('answers 413 as soon as a part passes the file limit, without waiting for the rest of the body', async () => {
    const connection = await open();
    // Declared within the total limit, but the one part is bigger than a file may be; the body is never finished.
    connection.socket.write(multipartHead(120 * 1024) + partHead);
    connection.socket.write(Buffer.alloc(80 * 1024, 1));
    const received = await connection.closed;
    expect(received).toMatch(/^HTTP\/1\.1 413/);
    expect(received).toContain('exceeds the 65536-byte file limit');
  });
});
