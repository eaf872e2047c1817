// A tiny client of the p2psync daemon's control socket, using only node:net.
//
// The protocol (docs/control-protocol.md) is newline-delimited JSON over a Unix socket: one
// request object per line, one answer per request, in order. Each request carries an `id` that
// its answer echoes, so requests can be pipelined: send many, and match each answer by its id.
//
//   import { connect } from "./client.mjs";
//   const client = await connect(process.env.P2PSYNC_SOCKET ?? "/run/p2psync/control.sock");
//   const [hello, record] = await Promise.all([      // both requests go out at once
//     client.call("hello", { client: "my-app/1.0" }),
//     client.call("get", { collection: "notes", key: "a" }),
//   ]);
//   client.close();
//
// Never send back an `hlc`: it is beyond 2^53 and JSON.parse rounds it. Versions are strings.

import net from "node:net";

export class ControlError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code; // stable: "not_found", "conflict", "forbidden", ...
  }
}

export class Client {
  #socket;
  #nextId = 1;
  #waiting = new Map(); // request id -> { resolve, reject }
  #buffered = "";

  constructor(socket) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (text) => this.#receive(text));
    socket.on("close", () => this.#failAll(new Error("the daemon closed the connection")));
    socket.on("error", (error) => this.#failAll(error));
  }

  // Send one request; resolves to its `result`, or rejects with a ControlError.
  call(method, params = {}) {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.#socket.write(JSON.stringify({ id, method, ...params }) + "\n");
    });
  }

  close() {
    this.#socket.end();
  }

  #receive(text) {
    this.#buffered += text;
    let newline;
    while ((newline = this.#buffered.indexOf("\n")) >= 0) {
      const line = this.#buffered.slice(0, newline);
      this.#buffered = this.#buffered.slice(newline + 1);
      if (line.trim()) this.#answer(JSON.parse(line));
    }
  }

  #answer(answer) {
    const waiter = this.#waiting.get(answer.id);
    if (!waiter) return; // an answer to no request of ours (id null: a line too long to read)
    this.#waiting.delete(answer.id);
    if (answer.ok) waiter.resolve(answer.result);
    else waiter.reject(new ControlError(answer.error.code, answer.error.message));
  }

  #failAll(error) {
    for (const waiter of this.#waiting.values()) waiter.reject(error);
    this.#waiting.clear();
  }
}

// Open a connection to the daemon's socket.
export function connect(path) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(path);
    socket.once("connect", () => {
      socket.removeListener("error", reject);
      resolve(new Client(socket));
    });
    socket.once("error", reject);
  });
}
