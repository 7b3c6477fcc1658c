'use strict';
// Nodemailer's pooled SMTP transport as a peer for bench/throughput.py.
//
//   node bench/nodemailer_bench.js --port 2525 --messages 10000 --content fields.json \
//        [--connections 20] [--max-messages 100] [--in-flight 200] [--timeout 600]
//
// Each message is built from its fields (from, to, subject, text, html) by
// Nodemailer itself, as an application would send it. Prints one JSON line:
// {"sent": n, "errors": n, "seconds": s, "cpuSeconds": s}.

const fs = require('fs');
const path = require('path');
const nodemailer = require(path.join(__dirname, 'node_modules', 'nodemailer'));

function parseArgs(argv) {
  const args = {
    host: '127.0.0.1',
    port: 0,
    messages: 10000,
    connections: 20,
    maxMessages: 100,
    inFlight: 200,
    timeout: 600,
    content: '',
  };
  const names = {
    '--host': 'host',
    '--port': 'port',
    '--messages': 'messages',
    '--connections': 'connections',
    '--max-messages': 'maxMessages',
    '--in-flight': 'inFlight',
    '--timeout': 'timeout',
    '--content': 'content',
  };
  for (let i = 2; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) {
      throw new Error(`unknown or incomplete option ${argv[i]}`);
    }
    args[key] = typeof args[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!args.port || !args.content) {
    throw new Error('--port and --content are required');
  }
  if (args.host !== '127.0.0.1' && args.host !== 'localhost') {
    throw new Error('benchmarks send to 127.0.0.1 only');
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv);
  const fields = JSON.parse(fs.readFileSync(args.content, 'utf8'));
  const watchdog = setTimeout(() => {
    console.error(`timeout after ${args.timeout}s`);
    process.exit(2);
  }, args.timeout * 1000);
  watchdog.unref();

  const transport = nodemailer.createTransport({
    pool: true,
    host: args.host,
    port: args.port,
    secure: false,
    ignoreTLS: true,
    maxConnections: args.connections,
    maxMessages: args.maxMessages,
  });
  const from = { name: fields.from.name, address: fields.from.email };
  let next = 0;
  let sent = 0;
  let errors = 0;
  let lastReport = Date.now();

  async function lane() {
    while (next < args.messages) {
      const i = next++;
      try {
        await transport.sendMail({
          from,
          to: `${fields.recipientPrefix}${i}@${fields.recipientDomain}`,
          subject: `${fields.subjectPrefix}${String(i).padStart(6, '0')}${fields.subjectSuffix}`,
          text: fields.text,
          html: fields.html,
        });
        sent++;
      } catch (err) {
        errors++;
        if (errors <= 3) console.error(`send ${i} failed: ${err.message}`);
      }
      if (Date.now() - lastReport >= 2000) {
        lastReport = Date.now();
        console.error(`  nodemailer: ${sent}/${args.messages} sent`);
      }
    }
  }

  const start = process.hrtime.bigint();
  const cpuStart = process.cpuUsage();
  const lanes = Math.min(args.inFlight, args.messages);
  await Promise.all(Array.from({ length: lanes }, lane));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  transport.close();
  console.log(JSON.stringify({ sent, errors, seconds, cpuSeconds }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
