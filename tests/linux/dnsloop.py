"""Resolve one name in a loop from inside a namespace, and count what went wrong.

    python dnsloop.py NAME RATE EXPECTED_ADDRESS...

Asks the resolver in ``/etc/resolv.conf`` (inside ``ip netns exec``, the instance's own)
for NAME's A and AAAA records in turn, RATE queries a second, each with one try and a 1 s
timeout, until its standard input closes. Prints ``ready`` once the first answer is right,
then at the end one JSON line: queries sent, lost (no reply), wrong (a reply that is not
exactly the expected addresses), and the first few failures.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import dns.message
import dns.query
import dns.rdatatype
import dns.resolver


def main() -> int:
    name, rate, expected = sys.argv[1], float(sys.argv[2]), set(sys.argv[3:])
    server = dns.resolver.Resolver().nameservers[0]
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    sent = lost = wrong = 0
    failures: list[str] = []
    announced = False
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not done.is_set():
        rtype = dns.rdatatype.A if sent % 2 == 0 else dns.rdatatype.AAAA
        want = {a for a in expected if (":" in a) == (rtype == dns.rdatatype.AAAA)}
        query = dns.message.make_query(name, rtype)
        sent += 1
        try:
            reply = dns.query.udp(query, server, timeout=1.0)
            got = {r.to_text() for rrset in reply.answer for r in rrset}
            if got != want:
                wrong += 1
                failures.append(f"{time.time():.3f} {rtype.name}: {sorted(got)}")
        except dns.exception.Timeout:
            lost += 1
            failures.append(f"{time.time():.3f} {rtype.name}: no reply")
        if not announced:
            if lost or wrong:
                sent = lost = wrong = 0  # still starting: the resolver may not be up
                failures.clear()
            else:
                print("ready", flush=True)
                announced = True
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    print(json.dumps({"sent": sent, "lost": lost, "wrong": wrong, "failures": failures[:10]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
