"""The streaming MIME reader (intake.mime_stream) and the DATA text reader of our SMTP server
(smtp_server.DataStream), as pure functions over bytes and files: no server, no database."""

from __future__ import annotations

import base64
import binascii
import io
import random
import threading
import time
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from payoutdesk.intake import mail_intake, mime_stream
from payoutdesk.intake.smtp_server import END, DataStream

Leaves = list[tuple[str | None, str, bytes]]


def email_leaves(raw: bytes) -> Leaves:
    """What the email package makes of a mail: each non-multipart part's file name, type, decoded body."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    out: Leaves = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        body = part.get_payload(decode=True)
        out.append((part.get_filename(), part.get_content_type(), body if isinstance(body, bytes) else b""))
    return out


def stream_leaves(raw: bytes, piece: int = mime_stream.PIECE) -> Leaves:
    f = io.BytesIO(raw)
    structure = mime_stream.scan(f)
    return [(mime_stream.filename(leaf.headers), leaf.headers.get_content_type(),
             b"".join(mime_stream.decode(f, leaf, piece))) for leaf in structure.leaves()]


@pytest.fixture(params=[7, 64, 1000])
def small_blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Read the file in tiny blocks, so that boundaries, escapes and lines fall across them."""
    size = int(request.param)
    monkeypatch.setattr(mime_stream, "BLOCK", size)
    return size


def nested_mail(linesep: str = "\r\n") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "brand@shop.test", "returns-x@mail.test", "Nested"
    msg.set_content("Plain text\n.a line with a dot\n--not a boundary\n")
    msg.add_alternative("<p>html</p>", subtype="html")  # multipart/alternative
    msg.make_mixed()  # multipart/mixed > multipart/alternative
    msg.add_attachment(b"ActionId,Amount\r\n1,2.00\r\n", maintype="text", subtype="csv", filename="one.csv")
    inner = EmailMessage()
    inner.add_attachment(bytes(range(256)) * 40, maintype="application", subtype="octet-stream",
                         filename="two.csv.gz")
    inner.add_attachment("é,ü\n" * 300, subtype="csv", filename="three.csv", cte="quoted-printable")
    msg.attach(inner)  # multipart/mixed > multipart/mixed
    forwarded = EmailMessage()
    forwarded["Subject"] = "forwarded"
    forwarded.set_content("see attached")
    forwarded.add_attachment(b"ActionId\r\n9\r\n", maintype="text", subtype="csv", filename="four.csv")
    msg.add_attachment(forwarded)  # message/rfc822 holding a multipart
    return msg.as_bytes(policy=policy.SMTP if linesep == "\r\n" else policy.default)


@pytest.mark.parametrize("linesep", ["\r\n", "\n"])
def test_nested_multiparts_give_the_email_packages_parts(small_blocks: int, linesep: str) -> None:
    raw = nested_mail(linesep)
    assert (b"\r\n" in raw) == (linesep == "\r\n")
    ours = stream_leaves(raw)
    assert ours == email_leaves(raw)
    names = [name for name, _, _ in ours]
    assert names == [None, None, "one.csv", "two.csv.gz", "three.csv", None, "four.csv"]
    assert ours[3][2] == bytes(range(256)) * 40
    assert ours[4][2].decode() == "é,ü" + linesep + ("é,ü" + linesep) * 299  # the mail's line endings


def test_random_mails_match_the_email_package(small_blocks: int) -> None:
    rnd = random.Random(small_blocks)
    for _ in range(40):
        msg = EmailMessage()
        msg["Subject"] = "x"
        msg.set_content("hello\n" * rnd.randint(0, 3))
        if rnd.random() < 0.5:
            msg.add_alternative("<p>hi</p>", subtype="html")
        for k in range(rnd.randint(0, 3)):
            data = rnd.randbytes(rnd.randint(0, 3000))
            cte = rnd.choice(["base64", "quoted-printable", "8bit"])
            if cte == "base64":
                msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=f"f{k}.csv")
            else:
                text = "é,ü;=\t \n" * rnd.randint(0, 40) + "x" * rnd.randint(0, 300)
                msg.add_attachment(text, subtype="csv", filename=f"r {k}.csv", cte=cte)
        raw = msg.as_bytes(policy=rnd.choice([policy.SMTP, policy.default]))
        assert stream_leaves(raw) == email_leaves(raw)


def single_part(body: bytes, cte: str, name: str = "r.csv", linesep: bytes = b"\r\n") -> bytes:
    head = (f"From: brand@shop.test\nSubject: one part\nContent-Type: text/csv\n"
            f"Content-Disposition: attachment; filename=\"{name}\"\nContent-Transfer-Encoding: {cte}\n\n")
    return head.encode().replace(b"\n", linesep) + body


def test_a_single_part_mail_whose_body_is_the_file(small_blocks: int) -> None:
    data = b"ActionId,Amount\r\n1,2.00\r\n"
    raw = single_part(data, "8bit")
    (leaf,) = stream_leaves(raw)
    assert leaf == ("r.csv", "text/csv", data)
    parsed = mail_intake.parse(raw)
    assert parsed.subject == "one part" and parsed.header_from == "brand@shop.test"
    assert [a.name for a in parsed.returns_files] == ["r.csv"]
    assert b"".join(parsed.returns_files[0].pieces()) == data


@pytest.mark.parametrize("width", [1, 3, 4, 5, 76, 77, 1000, 100_000])
@pytest.mark.parametrize("linesep", [b"\r\n", b"\n"])
def test_base64_with_lines_of_any_length(small_blocks: int, width: int, linesep: bytes) -> None:
    data = random.Random(width).randbytes(3 * 1024 + 2)
    text = base64.b64encode(data)
    lines = linesep.join(text[i:i + width] for i in range(0, len(text), width)) + linesep
    assert stream_leaves(single_part(lines, "base64", linesep=linesep), piece=1000)[0][2] == data


def test_base64_with_odd_lines_and_stray_whitespace(small_blocks: int) -> None:
    data = random.Random(5).randbytes(5000)
    text = base64.b64encode(data)
    rnd = random.Random(6)
    out, i = bytearray(), 0
    while i < len(text):
        n = rnd.randint(0, 90)
        out += text[i:i + n] + rnd.choice([b"\r\n", b"\n", b" \r\n", b"\t", b"  ", b"\r\n\r\n"])
        i += n
    assert stream_leaves(single_part(bytes(out), "BASE64"))[0][2] == data


def test_decoded_pieces_are_of_the_piece_size(small_blocks: int) -> None:
    data = random.Random(1).randbytes(10_000)
    raw = single_part(base64.encodebytes(data).replace(b"\n", b"\r\n"), "base64")
    f = io.BytesIO(raw)
    (leaf,) = mime_stream.scan(f).leaves()
    pieces = list(mime_stream.decode(f, leaf, 4096))
    assert [len(p) for p in pieces] == [4096, 4096, 10_000 - 8192]
    assert b"".join(pieces) == data


def test_broken_base64_is_undecodable() -> None:
    f = io.BytesIO(single_part(b"QWN0aW9uSWQ=\r\nQ\r\n", "base64"))
    (leaf,) = mime_stream.scan(f).leaves()
    with pytest.raises(mime_stream.Undecodable):
        b"".join(mime_stream.decode(f, leaf))


def test_quoted_printable(small_blocks: int) -> None:
    text = ("Name=Zo=C3=AB,Amount=3D1.00  \r\n"  # escapes, an encoded "="
            "a very long line split by soft breaks =\r\n"
            "goes on here=\r\n"
            " and ends\r\n" + "=E2=82=AC" * 300 + "\r\n")
    body = stream_leaves(single_part(text.encode(), "quoted-printable"))[0][2]
    assert body == binascii.a2b_qp(text.encode())
    assert body.startswith("Name=Zoë,Amount=1.00".encode())
    assert b"soft breaks goes on here and ends\r\n" in body
    assert body.endswith("€".encode() * 300 + b"\r\n")
    one_line = ("=C3=A9" * 2000).encode()  # no line end at all: cut between escapes, never inside one
    assert stream_leaves(single_part(one_line, "quoted-printable"))[0][2] == "é".encode() * 2000


def test_rfc_2231_and_rfc_2047_file_names(small_blocks: int) -> None:
    raw = (b"Subject: names\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
           b"--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment;\r\n"
           b" filename*=UTF-8''r%C3%A9tours%20novembre.csv\r\n\r\nA\r\n"
           b"--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment;\r\n"
           b" filename*0*=UTF-8''tr%C3%A8s%20long;\r\n filename*1=\"_nom.csv\"\r\n\r\nB\r\n"
           b"--b\r\nContent-Type: text/csv; name=\"=?utf-8?b?w6l0w6kuY3N2?=\"\r\n\r\nC\r\n"
           b"--b--\r\n")
    assert stream_leaves(raw) == email_leaves(raw) == [
        ("rétours novembre.csv", "text/csv", b"A"), ("très long_nom.csv", "text/csv", b"B"),
        ("été.csv", "text/csv", b"C")]
    assert [a.name for a in mail_intake.parse(raw).returns_files] == [
        "rétours novembre.csv", "très long_nom.csv", "été.csv"]


def test_boundaries_across_blocks_and_lookalikes(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\npreamble\r\n--=_b\r\n"
           b"Content-Type: text/csv; name=a.csv\r\n\r\n--=_bX not a boundary\r\n--=_b-- also not\r\nx--=_b\r\n"
           b"--=_b \t\r\n"  # transport padding after the boundary
           b"Content-Type: text/csv; name=b.csv\r\n\r\nB\r\n--=_b--\r\nepilogue\r\n--=_b\r\nnot a part\r\n")
    expected = [("a.csv", "text/csv", b"--=_bX not a boundary\r\n--=_b-- also not\r\nx--=_b"),
                ("b.csv", "text/csv", b"B")]
    assert email_leaves(raw) == expected
    for block in range(3, 40):  # every cut through every boundary
        monkeypatch.setattr(mime_stream, "BLOCK", block)
        assert stream_leaves(raw) == expected, block


def test_a_part_without_a_blank_line_and_a_truncated_mail() -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/csv; name=a.csv\r\n"
           b"--b\r\nContent-Type: text/csv; name=b.csv\r\n\r\nno end")
    assert stream_leaves(raw) == [("a.csv", "text/csv", b""), ("b.csv", "text/csv", b"no end")]


def test_parse_reads_a_spooled_file_and_counts_what_else_it_carried(tmp_path: Path) -> None:
    path = tmp_path / "mail"
    path.write_bytes(nested_mail())
    parsed = mail_intake.parse(path)
    assert parsed.subject == "Nested" and parsed.unreadable is None
    assert [a.name for a in parsed.returns_files] == ["one.csv", "two.csv.gz", "three.csv", "four.csv"]
    assert parsed.others == []
    assert b"".join(parsed.returns_files[1].pieces()) == bytes(range(256)) * 40
    assert b"".join(parsed.returns_files[3].pieces()) == b"ActionId\r\n9\r\n"


def test_too_many_parts_are_not_all_looked_at(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mime_stream, "MAX_PARTS", 3)
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"".join(
        f"--b\r\nContent-Type: text/csv; name={i}.csv\r\n\r\n{i}\r\n".encode() for i in range(5)) + b"--b--\r\n"
    parsed = mail_intake.parse(raw)
    assert [a.name for a in parsed.returns_files] == ["0.csv", "1.csv", "2.csv"]
    assert parsed.others == ["more parts, not looked at (at most 3 are)"]


# --- the DATA text ------------------------------------------------------------------------------------


def stuffed(message: bytes) -> bytes:
    """``message`` as a client sends it after DATA: dot-stuffed, then the end marker."""
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines) + b".\r\n"


MESSAGES = [b"", b"a\r\n", b".\r\n", b"..\r\n", b".x\r\n.\r\n..\r\n", b"x\r\n.\r\n\r\n.y\r\n",
            b"\r\n\r\n", b"a\rb\n.c\r\n", b"end\r\n.\r\r\n", b"\r\n.\r\n.\r\n"]


def read_like_the_server(wire: bytes, sizes: random.Random, stream: DataStream) -> tuple[bytes, int]:
    """Read ``wire`` as smtp_DATA does (a few bytes when ``need`` says, else up to the end marker or a block
    of what has arrived); the message and how many bytes were read."""
    out, pos = bytearray(), 0
    while not stream.ended:
        if stream.need:
            block = wire[pos:pos + stream.need]
        else:
            arrived = wire[pos:pos + sizes.randint(1, 12)]
            end = arrived.find(END)
            block = arrived[:end + len(END)] if end >= 0 else arrived[:max(1, len(arrived) - len(END) + 1)]
        assert block, "read past what was sent"
        pos += len(block)
        out += stream.feed(block)
    return bytes(out), pos


@pytest.mark.parametrize("message", MESSAGES)
def test_dot_stuffing_and_the_end_marker_across_blocks(message: bytes) -> None:
    wire = stuffed(message)
    for seed in range(200):  # blocks of 1 to 12 bytes: every marker and stuffed dot split every way
        stream = DataStream()
        got, read = read_like_the_server(wire + b"NOOP\r\n", random.Random(seed), stream)
        assert got == message
        assert read == len(wire)  # never beyond the end marker: the next command is left to read
        assert stream.size == len(message)


def test_every_split_of_a_stuffed_message_in_two() -> None:
    message = b"From: a\r\n\r\n.\r\n..x\r\n.\r\nlast\r\n"
    wire = stuffed(message)
    for cut in range(len(wire) + 1):
        stream = DataStream()
        first = stream.feed(wire[:cut])
        rest = b""
        if not stream.ended:
            rest = stream.feed(wire[cut:])
        assert stream.ended and first + rest == message, cut


def test_large_blocks_of_base64_lines() -> None:
    data = base64.encodebytes(random.Random(3).randbytes(300_000)).replace(b"\n", b"\r\n")
    message = b"Subject: big\r\n\r\n" + data
    wire = stuffed(message)
    stream = DataStream()
    got = bytearray()
    for i in range(0, len(wire), 65_536):
        if not stream.ended:
            got += stream.feed(wire[i:i + 65_536])
    assert stream.ended and bytes(got) == message


def test_many_small_parts_and_lookalike_lines_are_walked_quickly() -> None:
    lookalikes = b"--b-not-quite\r\n--\r\n" * 100_000  # lines that begin like a delimiter
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/csv; name=a.csv\r\n\r\n"
           + lookalikes + b"\r\n" + b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(5000))
           + b"--b--\r\n")
    began = time.monotonic()
    f = io.BytesIO(raw)
    structure = mime_stream.scan(f)
    leaves = list(structure.leaves())
    assert time.monotonic() - began < 10  # 1.7 s here (100,000 lookalikes looked at, 1,000 headers parsed)
    assert len(leaves) == mime_stream.MAX_PARTS and structure.truncated
    assert b"".join(mime_stream.decode(f, leaves[0])) == lookalikes


def test_decoding_ahead_passes_errors_on_and_stops_when_closed() -> None:
    before = threading.active_count()
    made: list[int] = []

    def pieces() -> Iterator[bytes]:
        for i in range(100):
            made.append(i)
            yield bytes([i])

    ahead = mail_intake._read_ahead(pieces, depth=2)
    assert next(ahead) == b"\x00"
    ahead.close()  # the consumer gives up (a file over the limit): the thread ends, the rest is not decoded
    assert len(made) <= 5
    assert threading.active_count() == before

    def broken() -> Iterator[bytes]:
        yield b"a"
        raise mime_stream.Undecodable("broken base64")

    with pytest.raises(mime_stream.Undecodable):
        list(mail_intake._read_ahead(broken))
    assert threading.active_count() == before
    assert b"".join(mail_intake._read_ahead(pieces)) == bytes(range(100))
