#!/usr/bin/env node
// A Node.js client of the upscaling service over gRPC (@grpc/grpc-js + @grpc/proto-loader reading ../../protos):
// tiles an AOI (TilerService.TileAoi), creates a task with one job per tile (UpscalingService.CreateTask),
// follows it with WatchTask, drops the stream on purpose after a few messages and resumes it with
// `after_sequence` (no event missed or repeated), then prints the task's results (GetTaskResults).
//
//   node upscale.js --gateway 127.0.0.1:50051 --endpoint http://127.0.0.1:8081/openeo/1.2 \
//     --application http://127.0.0.1:8081/udp/wind_turbine_detection.json [--aoi aoi.geojson] [--grid 5x5km] \
//     [-p year=2024] [--disconnect-after 3] [--token KEY] [--tls [--ca ca.pem] [--cert c.pem --key k.pem]]
//
// With --tls the channel is the library's standard TLS channel (trusting --ca, or the system's CAs; --cert/--key
// for mTLS) and the token travels as standard call credentials; without TLS it is sent as plain metadata.
//
// Exit codes: 0 the task finished, 1 a gRPC error (its code and the server's message are printed), 2 bad usage,
// 3 the task ended failed or canceled.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { parseArgs } = require("node:util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
const RESUME_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 8000]; // then give up
// A stream broken by the server side (gateway restart, network) is resumed; other errors are final.
const RESUMABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.INTERNAL, grpc.status.CANCELLED]);

function options() {
  const { values } = parseArgs({
    options: {
      gateway: { type: "string", default: process.env.UPSCALING_GRPC || "127.0.0.1:50051" },
      endpoint: { type: "string", default: "http://127.0.0.1:8081/openeo/1.2" },
      application: { type: "string", default: "http://127.0.0.1:8081/udp/wind_turbine_detection.json" },
      aoi: { type: "string", default: path.join(__dirname, "aoi.geojson") },
      grid: { type: "string", default: "5x5km" },
      param: { type: "string", short: "p", multiple: true, default: ["year=2024"] },
      title: { type: "string", default: "Node.js client example" },
      "disconnect-after": { type: "string", default: "3" },
      token: { type: "string", default: process.env.UPSCALING_TOKEN || "" },
      tls: { type: "boolean", default: false },
      ca: { type: "string", default: "" },
      cert: { type: "string", default: "" },
      key: { type: "string", default: "" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(fs.readFileSync(__filename, "utf8").split("\n").slice(1, 15).join("\n").replace(/^\/\/ ?/gm, ""));
    process.exit(0);
  }
  const parameters = {};
  for (const item of values.param) {
    const at = item.indexOf("=");
    if (at < 1) usage(`-p wants NAME=VALUE, got ${JSON.stringify(item)}`);
    parameters[item.slice(0, at)] = item.slice(at + 1);
  }
  const disconnectAfter = Number(values["disconnect-after"]);
  if (!Number.isInteger(disconnectAfter) || disconnectAfter < 0) usage("--disconnect-after wants a count >= 0");
  return { ...values, parameters, disconnectAfter };
}

function usage(message) {
  console.error(`usage error: ${message} (see --help)`);
  process.exit(2);
}

// TLS channel credentials (CA, optional client certificate), combined with the token as call credentials.
function tlsCredentials(args) {
  const read = (file) => (file ? fs.readFileSync(file) : null);
  const channel = grpc.credentials.createSsl(read(args.ca), read(args.key), read(args.cert));
  if (!args.token) return channel;
  const call = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${args.token}`);
    callback(null, metadata);
  });
  return grpc.credentials.combineChannelCredentials(channel, call);
}

function loadServices() {
  const definition = protoLoader.loadSync(["upscaling/v1/upscaling.proto", "upscaling/v1/tiler.proto"], {
    includeDirs: [PROTOS], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).upscaling.v1;
}

// proto enum names -> the API's lower-case statuses: JOB_STATUS_FINISHED -> finished
const status = (name) => String(name).replace(/^(JOB|TASK)_STATUS_/, "").toLowerCase();
const counts = (map) => Object.entries(map || {}).filter(([, n]) => Number(n) > 0)
  .map(([s, n]) => `${n} ${s}`).join(", ") || "no jobs";

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 120_000 }, (error, reply) => {
      if (error) reject(error);
      else resolve(reply);
    });
  });
}

/**
 * Follow a task from `after` on. Resolves {last, terminal, dropped}: `dropped` when this client cancelled the
 * stream after `dropAfter` messages (a deliberate disconnect), `terminal` when the server ended it.
 */
function watchOnce(client, metadata, taskId, after, dropAfter, onMessage) {
  return new Promise((resolve, reject) => {
    let last = after;
    let received = 0;
    let dropped = false;
    let terminal = false;
    const call = client.WatchTask({ task_id: taskId, after_sequence: after }, metadata);
    call.on("data", (message) => {
      const sequence = Number(message.sequence);
      if (message.update !== "snapshot" && sequence <= last) {
        call.cancel();
        reject(new Error(`event sequence ${sequence} repeated after ${last}`));
        return;
      }
      last = sequence;
      received += 1;
      terminal = onMessage(message) || terminal;
      if (dropAfter !== null && received >= dropAfter && !terminal) {
        dropped = true;
        call.cancel();
      }
    });
    call.on("error", (error) => {
      if (dropped && error.code === grpc.status.CANCELLED) resolve({ last, terminal, dropped });
      else reject(Object.assign(error, { lastSequence: last }));
    });
    call.on("end", () => resolve({ last, terminal, dropped }));
  });
}

function describe(message) {
  const sequence = Number(message.sequence);
  if (message.update === "snapshot") {
    const task = message.snapshot;
    return { line: `[${sequence}] snapshot: task ${task.id} ${status(task.status)} (${counts(task.job_counts)})`,
             terminal: ["finished", "failed", "canceled"].includes(status(task.status)),
             taskStatus: status(task.status) };
  }
  if (message.update === "job_event") {
    const e = message.job_event;
    const backend = e.backend_job_id ? ` backend job ${e.backend_job_id}` : "";
    const progress = status(e.status) === "running" ? ` ${Math.round(e.progress)} %` : "";
    return { line: `[${sequence}] job ${e.job_id} ${status(e.status)}${progress}${backend}`, terminal: false };
  }
  const e = message.task_event;
  return { line: `[${sequence}] task ${e.task_id} ${status(e.status)} (${counts(e.job_counts)})`,
           terminal: ["finished", "failed", "canceled"].includes(status(e.status)), taskStatus: status(e.status) };
}

async function main() {
  const args = options();
  const aoi = fs.readFileSync(args.aoi, "utf8");
  const v1 = loadServices();
  const credentials = args.tls ? tlsCredentials(args) : grpc.credentials.createInsecure();
  const channelOptions = { "grpc.max_receive_message_length": 256 * 1024 * 1024 };
  const tiler = new v1.TilerService(args.gateway, credentials, channelOptions);
  const upscaling = new v1.UpscalingService(args.gateway, credentials, channelOptions);
  const metadata = new grpc.Metadata();
  if (args.token && !args.tls) metadata.set("authorization", `Bearer ${args.token}`);

  // 1. Tiles of the AOI on the fixed global grid.
  const tiled = await unary(tiler, "TileAoi", { aoi_geojson: aoi, grid: args.grid }, metadata);
  console.log(`tiles: ${tiled.tiles.length} of grid ${tiled.grid.name}: ${tiled.tiles.map((t) => t.id).join(" ")}`);
  for (const warning of tiled.warnings) console.log(`warning: ${warning}`);

  // 2. One job per tile: the tile geometry is the UDP's spatial_extent.
  const created = await unary(upscaling, "CreateTask", {
    title: args.title, label: "openeo",
    service: { endpoint: args.endpoint, application: args.application },
    parameters_json: JSON.stringify(args.parameters),
    dimension: { name: "spatial_extent", values_json: tiled.tiles.map((t) => t.geometry_geojson) },
  }, metadata);
  const taskId = created.task.id;
  console.log(`created task ${taskId}: ${tiled.tiles.length} jobs, ${status(created.task.status)}`);

  // 3. Follow it; drop the stream once on purpose, then resume after the last sequence seen. Any other broken
  //    stream (gateway restart, network) is resumed the same way.
  let after = 0;
  let dropAfter = args.disconnectAfter > 0 ? args.disconnectAfter : null;
  let taskStatus = status(created.task.status);
  let events = 0;
  let attempt = 0;
  for (;;) {
    let outcome;
    try {
      outcome = await watchOnce(upscaling, metadata, taskId, after, dropAfter, (message) => {
        const { line, terminal, taskStatus: s } = describe(message);
        events += 1;
        if (s) taskStatus = s;
        console.log(line);
        return terminal;
      });
      attempt = 0;
    } catch (error) {
      if (!RESUMABLE.has(error.code) || attempt >= RESUME_DELAYS_MS.length) {
        throw error;
      }
      after = error.lastSequence;
      console.log(`stream broken (${grpc.status[error.code]}); resuming after sequence ${after}`);
      await new Promise((r) => setTimeout(r, RESUME_DELAYS_MS[attempt++]));
      continue;
    }
    after = outcome.last;
    if (outcome.dropped) {
      console.log(`disconnected on purpose after sequence ${after}`);
      console.log(`resuming after sequence ${after}`);
      dropAfter = null;
      continue;
    }
    break; // the server ends the stream once the task is terminal
  }

  // 4. Results: a STAC ItemCollection with one Item per finished job.
  const results = JSON.parse((await unary(upscaling, "GetTaskResults", { task_id: taskId }, metadata)).stac_json);
  const features = results.features || [];
  for (const feature of features) {
    const hrefs = Object.values(feature.assets || {}).map((a) => a.href).join(" ");
    const props = feature.properties;
    console.log(`result of job ${props["upscaling:job_id"]} (backend job ${props["upscaling:backend_job_id"]}): ${hrefs}`);
  }
  const summary = { task_id: Number(taskId), status: taskStatus, tiles: tiled.tiles.length, results: features.length,
                    messages: events, last_sequence: after };
  console.log(`summary ${JSON.stringify(summary)}`);
  tiler.close();
  upscaling.close();
  return taskStatus === "finished" ? 0 : 3;
}

main().then((code) => process.exit(code)).catch((error) => {
  if (error.code !== undefined && grpc.status[error.code]) {
    console.error(`gRPC error ${grpc.status[error.code]}: ${error.details}`);
    process.exit(1);
  }
  console.error(error.stack || String(error));
  process.exit(1);
});
