"""A stand-in for a node's upstream resolver, run inside the lab's underlay namespace.

    python upstream_dns.py ADDRESS PORT ANSWER

Every A query is answered with ANSWER, every other query with NOERROR and no data."""

from __future__ import annotations

import socket
import sys

import dns.message
import dns.rdatatype
import dns.rrset


def main() -> None:
    address, port, answer = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        question = query.question[0]
        if question.rdtype == dns.rdatatype.A:
            reply.answer.append(dns.rrset.from_text(question.name, 30, "IN", "A", answer))
        sock.sendto(reply.to_wire(), peer)


if __name__ == "__main__":
    main()
