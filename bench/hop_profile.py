#!/usr/bin/env python3
"""Joins the raftmq::hop TRACE events of three brokers (DIR/data/broker-N/broker.log) by log
index and prints the median and p90 of every hop of a c=1 send. Usage: hop_profile.py DIR"""
import re, sys, statistics, glob, datetime
# per broker: list of (t, hop, index)
pat = re.compile(r'^(\S+)Z TRACE raftmq::hop: hop="(\w+)"(?: index=(\d+))?(?: messages=(\d+))?')
ev = {}
for b in (1,2,3):
    L=[]
    for line in open(f'{sys.argv[1]}/data/broker-{b}/broker.log'):
        m = pat.match(line)
        if not m: continue
        t = datetime.datetime.fromisoformat(m.group(1)).timestamp()
        L.append((t, m.group(2), int(m.group(3)) if m.group(3) else None))
    ev[b]=L
# leader = broker with "answered" events
leader = max(ev, key=lambda b: sum(1 for e in ev[b] if e[1]=='answered'))
followers = [b for b in ev if b!=leader]
# index-keyed first times per broker
def first(b, hop):
    d={}
    for t,h,i in ev[b]:
        if h==hop and i is not None and i not in d: d[i]=t
    return d
L = {h: first(leader,h) for h in ['log_append','log_durable','leader_sent','apply','applied','answered']}
F = {b:{h: first(b,h) for h in ['follower_received','log_append','log_durable','follower_replied']} for b in followers}
# request-level: send_received -> propose -> ... sequential at c=1: pair each 'answered' index with preceding send_received/propose and following send_replied
seq = [(t,h,i) for t,h,i in ev[leader] if h in ('send_received','propose','answered','send_replied','log_append')]
rows=[]
cur={}
for t,h,i in seq:
    if h=='send_received': cur={'send_received':t}
    elif h=='propose' and 'send_received' in cur and 'propose' not in cur: cur['propose']=t
    elif h=='log_append' and 'propose' in cur and 'idx' not in cur: cur['idx']=i
    elif h=='send_replied' and 'idx' in cur:
        cur['send_replied']=t; rows.append(cur); cur={}
def med(xs): 
    xs=sorted(xs); return xs[len(xs)//2] if xs else float('nan')
def p90(xs):
    xs=sorted(xs); return xs[int(len(xs)*0.9)] if xs else float('nan')
steps=[]
def add(name, a, b):
    d=[(b_-a_)*1e3 for a_,b_ in zip(a,b) if a_ is not None and b_ is not None]
    steps.append((name, med(d), p90(d), len(d)))
R=[r for r in rows if r['idx'] in L['answered'] and r['idx'] in L['apply']]
R=R[100:]  # skip warm-up
g=lambda d,i: d.get(i)
add('gRPC receive -> batcher propose', [r['send_received'] for r in R], [r['propose'] for r in R])
add('propose -> leader log append', [r['propose'] for r in R], [L['log_append'].get(r['idx']) for r in R])
add('leader log append -> leader durable', [L['log_append'].get(r['idx']) for r in R], [L['log_durable'].get(r['idx']) for r in R])
add('leader log append -> AppendEntries sent', [L['log_append'].get(r['idx']) for r in R], [L['leader_sent'].get(r['idx']) for r in R])
for b in followers:
    add(f'sent -> follower {b} received', [L['leader_sent'].get(r['idx']) for r in R], [F[b]['follower_received'].get(r['idx']) for r in R])
    add(f'follower {b} received -> log append', [F[b]['follower_received'].get(r['idx']) for r in R], [F[b]['log_append'].get(r['idx']) for r in R])
    add(f'follower {b} append -> durable', [F[b]['log_append'].get(r['idx']) for r in R], [F[b]['log_durable'].get(r['idx']) for r in R])
    add(f'follower {b} durable -> replied', [F[b]['log_durable'].get(r['idx']) for r in R], [F[b]['follower_replied'].get(r['idx']) for r in R])
    add(f'follower {b} replied -> leader apply', [F[b]['follower_replied'].get(r['idx']) for r in R], [L['apply'].get(r['idx']) for r in R])
add('leader durable -> leader apply', [L['log_durable'].get(r['idx']) for r in R], [L['apply'].get(r['idx']) for r in R])
add('apply -> applied (RocksDB write)', [L['apply'].get(r['idx']) for r in R], [L['applied'].get(r['idx']) for r in R])
add('applied -> batcher answered', [L['applied'].get(r['idx']) for r in R], [L['answered'].get(r['idx']) for r in R])
add('answered -> gRPC reply', [L['answered'].get(r['idx']) for r in R], [r['send_replied'] for r in R])
add('TOTAL gRPC receive -> reply', [r['send_received'] for r in R], [r['send_replied'] for r in R])
# first follower reply -> apply (quorum)
fr=[min(F[b]['follower_replied'].get(r['idx'], 1e18) for b in followers) for r in R]
add('first follower replied -> leader apply', fr, [L['apply'].get(r['idx']) for r in R])
# inter-request gap: reply -> next receive (client side)
gaps=[(R[k+1]['send_received']-R[k]['send_replied'])*1e3 for k in range(len(R)-1)]
steps.append(('gRPC reply -> next request received (client + network)', med(gaps), p90(gaps), len(gaps)))
print(f"leader broker {leader}, requests {len(R)}")
for n,m,p,c in steps: print(f"{n:55s} p50 {m:7.3f} ms  p90 {p:7.3f} ms  (n={c})")
