// The official RocketMQ 5 Node.js client (npm rocketmq-client-nodejs) against a raftmq cluster,
// as a new user would write it: a producer, a simple consumer and a push consumer.
//
//   node clients/node/smoke.js ENDPOINT NORMAL_TOPIC FIFO_TOPIC
//
// Sends 10 normal messages (tag, key, property) and 6 FIFO messages in two message groups; the
// simple consumer receives and acknowledges every normal message exactly once, the push consumer
// (another group) consumes them all too, and the FIFO messages come to a simple consumer in send
// order within each group. Prints one line per step; exits 0 only when every check holds.
'use strict';

const { Producer, SimpleConsumer, PushConsumer, ConsumeResult } = require('rocketmq-client-nodejs');

const DEADLINE_MS = 60_000;

function check(ok, what) {
  console.log((ok ? 'ok   ' : 'FAIL ') + what);
  if (!ok) process.exit(1);
}

function sameSet(a, b) {
  return a.size === b.size && [...a].every(x => b.has(x));
}

async function main() {
  const [endpoints, topic, fifoTopic] = process.argv.slice(2);
  const producer = new Producer({ endpoints, namespace: '', topics: [topic, fifoTopic] });
  await producer.startup();
  const sent = new Set();
  for (let i = 0; i < 10; i++) {
    const receipt = await producer.send({
      topic, tag: 'TagA', keys: [`key-${i}`], properties: new Map([['n', String(i)]]), body: Buffer.from(`node ${i}`),
    });
    sent.add(receipt.messageId);
  }
  check(sent.size === 10, 'producer: 10 normal messages acknowledged');
  const fifoSent = { g1: [], g2: [] };
  for (let i = 0; i < 6; i++) {
    const group = i % 2 === 0 ? 'g1' : 'g2';
    fifoSent[group].push(`${group}:${i}`);
    await producer.send({ topic: fifoTopic, messageGroup: group, body: Buffer.from(`${group}:${i}`) });
  }
  check(true, 'producer: 6 FIFO messages in two groups acknowledged');
  await producer.shutdown();

  const simple = new SimpleConsumer({
    endpoints, namespace: '', consumerGroup: 'node-simple', subscriptions: new Map([[topic, 'TagA']]), awaitDuration: 2000,
  });
  await simple.startup();
  const received = new Set();
  let deadline = Date.now() + DEADLINE_MS;
  while (received.size < 10 && Date.now() < deadline) {
    for (const m of await simple.receive(32, 15000)) {
      if (received.has(m.messageId) || m.deliveryAttempt !== 1 || m.tag !== 'TagA') {
        check(false, `simple consumer: ${m.messageId} received once, first attempt, tag kept`);
      }
      received.add(m.messageId);
      await simple.ack(m);
    }
  }
  check(sameSet(received, sent), `simple consumer: all ${sent.size} received and acknowledged`);
  check((await simple.receive(32, 15000)).length === 0, 'simple consumer: nothing comes again after the acks');
  await simple.shutdown();

  const fifo = new SimpleConsumer({
    endpoints, namespace: '', consumerGroup: 'node-fifo', subscriptions: new Map([[fifoTopic, '*']]), awaitDuration: 2000,
  });
  await fifo.startup();
  const got = { g1: [], g2: [] };
  deadline = Date.now() + DEADLINE_MS;
  while (got.g1.length + got.g2.length < 6 && Date.now() < deadline) {
    for (const m of await fifo.receive(32, 15000)) {
      got[m.messageGroup].push(m.body.toString());
      await fifo.ack(m);
    }
  }
  check(JSON.stringify(got) === JSON.stringify(fifoSent), `FIFO consumer: each group in send order ${JSON.stringify(got)}`);
  await fifo.shutdown();

  const consumed = new Set();
  const push = new PushConsumer({
    endpoints, namespace: '', consumerGroup: 'node-push', subscriptions: new Map([[topic, '*']]),
    messageListener: { consume(m) { consumed.add(m.messageId); return ConsumeResult.SUCCESS; } },
  });
  await push.startup();
  deadline = Date.now() + DEADLINE_MS;
  while (!sameSet(consumed, sent) && Date.now() < deadline) {
    await new Promise(r => setTimeout(r, 100));
  }
  check(sameSet(consumed, sent), `push consumer: all ${sent.size} consumed (${consumed.size})`);
  await push.shutdown();
  console.log('node client: every check held');
  process.exit(0);
}

main().catch(e => { console.log('FAIL ' + (e && e.stack || e)); process.exit(1); });
