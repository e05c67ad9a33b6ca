// The Node peer of benchmarks/throughput.py: faktory-worker 4.x running a no-op job type.
//
//   FAKTORY_URL=tcp://127.0.0.1:7419 BENCH_QUEUE=default BENCH_CONCURRENCY=20 \
//     NODE_PATH=/tmp/fw-bench/node_modules node benchmarks/peers/node_worker.js
//
// faktory-worker reads FAKTORY_URL itself and stops on SIGTERM.
"use strict";

const faktory = require("faktory-worker");

const queue = process.env.BENCH_QUEUE || "default";
const concurrency = Number.parseInt(process.env.BENCH_CONCURRENCY || "20", 10);
const jobtype = process.env.BENCH_JOBTYPE || "noop";

faktory.register(jobtype, async () => {});
faktory.work({ queues: [queue], concurrency }).catch((error) => {
  console.error(error);
  process.exit(1);
});
