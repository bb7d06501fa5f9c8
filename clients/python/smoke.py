"""The official RocketMQ 5 Python client (PyPI rocketmq-python-client) against a raftmq cluster,
as a new user would write it: a producer, a simple consumer and a push consumer.

    python3 clients/python/smoke.py ENDPOINT NORMAL_TOPIC FIFO_TOPIC

Sends 10 normal messages (tag, key, property) and 6 FIFO messages in two message groups; the
simple consumer receives and acknowledges every normal message exactly once, the push consumer
(another group) consumes them all too, and the FIFO messages come to a simple consumer in send
order within each group. Prints one line per step; exits 0 only when every check holds.
"""

import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression, Message, MessageListener, Producer,
                      PushConsumer, SimpleConsumer)

DEADLINE_S = 60


def check(ok, what, quiet=False):
    if not ok or not quiet:
        print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        sys.exit(1)


def main():
    endpoint, topic, fifo_topic = sys.argv[1:4]
    config = ClientConfiguration(endpoint, Credentials())

    producer = Producer(config, (topic, fifo_topic))
    producer.startup()
    sent = set()
    for i in range(10):
        m = Message()
        m.topic = topic
        m.body = f"python {i}".encode()
        m.tag = "TagA"
        m.keys = f"key-{i}"
        m.add_property("n", str(i))
        receipt = producer.send(m)
        sent.add(receipt.message_id)
    check(len(sent) == 10, "producer: 10 normal messages acknowledged")
    fifo_sent = {"g1": [], "g2": []}
    for i in range(6):
        group = "g1" if i % 2 == 0 else "g2"
        m = Message()
        m.topic = fifo_topic
        m.body = f"{group}:{i}".encode()
        m.message_group = group
        fifo_sent[group].append(m.body.decode())
        producer.send(m)
    check(True, "producer: 6 FIFO messages in two groups acknowledged")
    producer.shutdown()

    consumer = SimpleConsumer(config, "python-simple", {topic: FilterExpression("TagA")}, await_duration=2)
    consumer.startup()
    received = {}
    deadline = time.time() + DEADLINE_S
    while len(received) < 10 and time.time() < deadline:
        for m in consumer.receive(32, 15):
            check(m.message_id not in received, f"simple consumer: {m.message_id} received once", quiet=True)
            check(m.delivery_attempt == 1 and m.tag == "TagA", f"simple consumer: {m.message_id} first attempt, tag kept", quiet=True)
            received[m.message_id] = m.body
            consumer.ack(m)
    check(set(received) == sent, f"simple consumer: all {len(sent)} received and acknowledged")
    check(consumer.receive(32, 15) == [], "simple consumer: nothing comes again after the acks")
    consumer.shutdown()

    fifo = SimpleConsumer(config, "python-fifo", {fifo_topic: FilterExpression()}, await_duration=2)
    fifo.startup()
    got = {"g1": [], "g2": []}
    deadline = time.time() + DEADLINE_S
    while sum(map(len, got.values())) < 6 and time.time() < deadline:
        for m in fifo.receive(32, 15):
            got[m.message_group].append(m.body.decode())
            fifo.ack(m)
    check(got == fifo_sent, f"FIFO consumer: each group in send order {got}")
    fifo.shutdown()

    consumed = set()
    lock = threading.Lock()

    class Listener(MessageListener):
        def consume(self, message):
            with lock:
                consumed.add(message.message_id)
            return ConsumeResult.SUCCESS

    push = PushConsumer(config, "python-push", Listener(), {topic: FilterExpression()})
    push.startup()
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        with lock:
            if consumed == sent:
                break
        time.sleep(0.1)
    with lock:
        check(consumed == sent, f"push consumer: all {len(sent)} consumed ({len(consumed)})")
    push.shutdown()
    print("python client: every check held", flush=True)


if __name__ == "__main__":
    main()
