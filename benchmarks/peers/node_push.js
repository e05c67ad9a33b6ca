// The Node peer of benchmarks/push.py: faktory-worker 4.x pushing no-op jobs.
//
// It reads one command a line on stdin and answers each with one line on stdout,
// "BENCH " followed by a JSON object (push.py FLUSHes the server between commands):
//
//   seq    BENCH_WARMUP pushes, then BENCH_JOBS pushes one after another, each timed
//   conc   BENCH_PRODUCERS async pushers sharing one client (its pool: up to 20
//          connections) push BENCH_WARMUP jobs, then BENCH_JOBS jobs between them
//   bulk   pushBulk of BENCH_WARMUP jobs, then of BENCH_JOBS in chunks of BENCH_CHUNK
//   quit   (or EOF) close and exit
//
// By hand, the three one after another (the queue is not flushed in between then):
//
//   printf 'seq\nconc\nbulk\n' | FAKTORY_URL=tcp://127.0.0.1:7419 BENCH_JOBS=10000 \
//     NODE_PATH=/tmp/fw-bench/node_modules node benchmarks/peers/node_push.js
"use strict";

const readline = require("node:readline");
const faktory = require("faktory-worker");

const url = process.env.FAKTORY_URL || "tcp://127.0.0.1:7419";
const queue = process.env.BENCH_QUEUE || "bench";
const jobtype = process.env.BENCH_JOBTYPE || "noop";
const jobs = Number.parseInt(process.env.BENCH_JOBS || "10000", 10);
const producers = Number.parseInt(process.env.BENCH_PRODUCERS || "16", 10);
const warmup = Number.parseInt(process.env.BENCH_WARMUP || "200", 10);
const chunk = Number.parseInt(process.env.BENCH_CHUNK || "1000", 10);

const payload = (i) => ({ jobtype, args: [i], queue });

// Wall-clock and this process's CPU time (user + system) from its making, in seconds.
function stopwatch() {
  const wall = process.hrtime.bigint();
  const cpu = process.cpuUsage();
  return () => {
    const used = process.cpuUsage(cpu);
    return [Number(process.hrtime.bigint() - wall) / 1e9, (used.user + used.system) / 1e6];
  };
}

// The share of `total` jobs each of `producers` pushers takes, as [first, count].
function shares(total) {
  const result = [];
  let first = 0;
  for (let k = 0; k < producers; k += 1) {
    const count = Math.floor(total / producers) + (k < total % producers ? 1 : 0);
    result.push([first, count]);
    first += count;
  }
  return result;
}

async function sequential(client) {
  for (let i = 0; i < warmup; i += 1) await client.push(payload(i));
  const latencies = new Array(jobs);
  const stop = stopwatch();
  for (let i = 0; i < jobs; i += 1) {
    const t0 = process.hrtime.bigint();
    await client.push(payload(i));
    latencies[i] = Number(process.hrtime.bigint() - t0);
  }
  const [seconds, cpu_seconds] = stop();
  return { seconds, cpu_seconds, attempted: warmup + jobs, latencies_ns: latencies };
}

async function concurrent(client) {
  const run = (total) =>
    Promise.all(
      shares(total).map(async ([first, count]) => {
        for (let i = first; i < first + count; i += 1) await client.push(payload(i));
      }),
    );
  await run(warmup);
  const stop = stopwatch();
  await run(jobs);
  const [seconds, cpu_seconds] = stop();
  return { seconds, cpu_seconds, attempted: warmup + jobs };
}

async function bulk(client) {
  let rejected = 0;
  const push = async (first, count) => {
    for (let at = first; at < first + count; at += chunk) {
      const batch = [];
      for (let i = at; i < Math.min(at + chunk, first + count); i += 1) batch.push(payload(i));
      rejected += Object.keys(await client.pushBulk(batch)).length;
    }
  };
  await push(0, warmup);
  const stop = stopwatch();
  await push(0, jobs);
  const [seconds, cpu_seconds] = stop();
  return { seconds, cpu_seconds, attempted: warmup + jobs, rejected };
}

const MODES = { seq: sequential, conc: concurrent, bulk };

async function main() {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const mode = line.trim();
    if (mode === "quit") break;
    let result;
    if (!(mode in MODES)) {
      result = { mode, error: `unknown command ${JSON.stringify(mode)}` };
    } else {
      let client;
      try {
        client = await faktory.connect({ url });
        result = { mode, failed: 0, rejected: 0, ...(await MODES[mode](client)) };
      } catch (error) {
        result = { mode, error: String((error && error.stack) || error) };
      } finally {
        if (client) await client.close();
      }
    }
    process.stdout.write(`BENCH ${JSON.stringify(result)}\n`);
  }
  process.exit(0);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
