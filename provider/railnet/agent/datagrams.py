"""Many UDP datagrams per system call: ``recvmmsg(2)`` and ``sendmmsg(2)`` through ctypes.

The DNS server's UDP work is dominated by fixed costs per datagram: two system calls, an
address tuple made from the sender's ``sockaddr`` on the way in and parsed back into one on
the way out, a bytes object for the query and another for the reply. A ``DatagramBatch``
owns one socket's vectors, allocated once: ``receive`` fills up to ``capacity`` slots with
one call; the caller writes each reply into its query's slot (the two ID bytes are already
in place there) and ``send`` hands every reply back to its sender with one call, the
sender's raw ``sockaddr`` reused as the destination.

Linux only, like the rest of the data plane.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct
from typing import Protocol, cast

MSG_DONTWAIT = 0x40


class ByteSlices(Protocol):
    """A ctypes ``c_char`` array as the type checker should see it: slices are bytes."""

    def __getitem__(self, index: slice, /) -> bytes: ...


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


_ADDRESS_SIZE = 28
"""``sizeof(struct sockaddr_in6)``, which also holds a ``sockaddr_in``."""

_libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's included
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
_recvmmsg.restype = ctypes.c_int
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
_sendmmsg.restype = ctypes.c_int

_LEN_STRIDE = ctypes.sizeof(_Mmsghdr) // 4
_LEN_AT = _Mmsghdr.msg_len.offset // 4
_IOV_STRIDE = ctypes.sizeof(_Iovec) // ctypes.sizeof(ctypes.c_size_t)
_IOV_LEN_AT = _Iovec.iov_len.offset // ctypes.sizeof(ctypes.c_size_t)


class DatagramBatch:
    """The receive and send vectors of one UDP socket: ``capacity`` slots of ``size`` bytes.

    Slot ``i`` is ``data[i * size : (i + 1) * size]``; after ``receive`` its datagram is
    ``data[i * size : i * size + length(i)]``. A reply is written over the query in the
    same slot and marked with ``set_reply(i, length)``; ``send(first, count)`` sends the
    replies of slots ``first`` to ``first + count - 1``."""

    def __init__(self, sock: socket.socket, capacity: int, size: int) -> None:
        self.fd = sock.fileno()
        self.capacity = capacity
        self.size = size
        # An anonymous mapping, so that memory is spent only on the slots bursts reach: an
        # idle environment's sockets cost a page or two, not capacity x size bytes each.
        self._mapping = mmap.mmap(-1, capacity * size)
        self._buffers = (ctypes.c_char * (capacity * size)).from_buffer(self._mapping)
        self._addresses = (ctypes.c_char * (capacity * _ADDRESS_SIZE))()
        self._iovecs = (_Iovec * capacity)()
        self._messages = (_Mmsghdr * capacity)()
        base = ctypes.addressof(self._buffers)
        names = ctypes.addressof(self._addresses)
        for index in range(capacity):
            self._iovecs[index].iov_base = base + index * size
            self._iovecs[index].iov_len = size
            header = self._messages[index].msg_hdr
            header.msg_name = names + index * _ADDRESS_SIZE
            header.msg_namelen = _ADDRESS_SIZE
            header.msg_iov = ctypes.addressof(self._iovecs[index])
            header.msg_iovlen = 1
        self.data = memoryview(self._buffers).cast("B")
        """Every slot's bytes, writable."""
        self.raw = cast(ByteSlices, self._buffers)
        """The same bytes as a ctypes array, whose slices are ``bytes`` in one step."""
        self._words = memoryview(self._messages).cast("B").cast("I")
        self._iov_words = memoryview(self._iovecs).cast("B").cast("N")  # type: ignore[call-overload]
        self._messages_at = ctypes.addressof(self._messages)
        self._message_size = ctypes.sizeof(_Mmsghdr)
        self._used = 0
        """Slots the last ``receive`` filled: the ones a reply may have shortened."""

    def receive(self) -> int:
        """Read the waiting datagrams, at most ``capacity``, without blocking: how many.
        Zero when none is waiting; an error other than "would block" raises ``OSError``."""
        # The kernel sets each address length to the family's (one per socket), which is
        # what the next receive needs again; only the buffer lengths need resetting.
        iov_words, size = self._iov_words, self.size
        for index in range(self._used):
            iov_words[index * _IOV_STRIDE + _IOV_LEN_AT] = size
        count: int = _recvmmsg(self.fd, self._messages_at, self.capacity, MSG_DONTWAIT, None)
        self._used = max(count, 0)
        if count < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(code, os.strerror(code))
        return count

    def length(self, index: int) -> int:
        """Bytes of the datagram received into slot ``index``."""
        return int(self._words[index * _LEN_STRIDE + _LEN_AT])

    def lengths(self, count: int) -> list[int]:
        """Bytes of the datagrams received into slots 0 .. ``count - 1``, in one step."""
        return self._words[_LEN_AT : count * _LEN_STRIDE : _LEN_STRIDE].tolist()

    def set_reply(self, index: int, length: int) -> None:
        """Slot ``index`` now holds a reply of ``length`` bytes for its datagram's sender."""
        self._iov_words[index * _IOV_STRIDE + _IOV_LEN_AT] = length

    def send(self, first: int, count: int) -> int:
        """Send the replies in slots ``first`` .. ``first + count - 1``: how many left.
        A full socket buffer drops the rest, as UDP may."""
        sent = 0
        while sent < count:
            done: int = _sendmmsg(
                self.fd,
                self._messages_at + (first + sent) * self._message_size,
                count - sent,
                0,
            )
            if done <= 0:
                if done < 0 and ctypes.get_errno() == errno.EINTR:
                    continue
                break
            sent += done
        return sent

    def sender(self, index: int) -> tuple[str, int] | tuple[str, int, int, int]:
        """The address slot ``index``'s datagram came from, as ``socket.sendto`` takes it."""
        start = index * _ADDRESS_SIZE
        raw = cast(ByteSlices, self._addresses)[start : start + _ADDRESS_SIZE]
        (family,) = struct.unpack_from("=H", raw)
        (port,) = struct.unpack_from(">H", raw, 2)
        if family == socket.AF_INET6:
            (flowinfo,) = struct.unpack_from("=I", raw, 4)
            (scope,) = struct.unpack_from("=I", raw, 24)
            return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope)
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
