#!/usr/bin/env python3
"""End-to-end round trip with the standard library's real mail clients.

smtplib sends to alice, imaplib and poplib read the message back; every check raises on
failure and the process exits non-zero. Usage:

    roundtrip.py --smtp HOST:PORT --imap HOST:PORT --pop3 HOST:PORT \
                 --user alice@example.test --password PW [--unknown nobody@example.test]
"""
import argparse
import email.utils
import imaplib
import poplib
import re
import smtplib
import sys
import time
import uuid

CRLF = b"\r\n"


def hostport(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def strip_trace(raw: bytes) -> bytes:
    """Removes the trace header fields the server prepends (Return-Path, Received), with
    their folded continuation lines."""
    lines = raw.split(CRLF)
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(rb"(?i)^(return-path|received):", line):
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
            continue
        break
    return CRLF.join(lines[i:])


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


def build_message(sender, rcpt, token):
    # Lines that trip naive servers: a leading dot, a lone dot with text, trailing blanks,
    # 8-bit UTF-8 text and a long line.
    body = (
        "Hello Alice,\r\n"
        ".a line that starts with a dot\r\n"
        "..two dots\r\n"
        "trailing blanks   \r\n"
        "Grüße aus Köln — ünïcödé\r\n"
        + ("x" * 900) + "\r\n"
        "\r\n"
        "token " + token + "\r\n"
    )
    headers = (
        f"From: Bob <{sender}>\r\n"
        f"To: Alice <{rcpt}>\r\n"
        f"Subject: round trip {token}\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{token}@example.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
    )
    return (headers + body).encode("utf-8")


def smtp_send(args, message):
    host, port = hostport(args.smtp)
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        code, _ = smtp.ehlo("client.example.test")
        check(code == 250, "EHLO answered 250")
        check(smtp.has_extn("8bitmime"), "server offers 8BITMIME")
        refused = smtp.sendmail("bob@example.test", [args.user], message, mail_options=["BODY=8BITMIME"])
        check(refused == {}, "message to alice accepted")
        if args.unknown:
            try:
                smtp.sendmail("bob@example.test", [args.unknown], message)
            except smtplib.SMTPRecipientsRefused as e:
                code, text = e.recipients[args.unknown]
                check(code == 550, f"unknown recipient refused with 550 ({code} {text!r})")
                check(b"5.1.1" in text, "unknown recipient carries 5.1.1")
            else:
                raise AssertionError("unknown recipient was accepted")


def imap_login(args):
    host, port = hostport(args.imap)
    imap = imaplib.IMAP4(host, port, timeout=30)
    typ, _ = imap.login(args.user, args.password)
    check(typ == "OK", "IMAP login")
    return imap


def imap_find(imap, token):
    typ, data = imap.select("INBOX")
    check(typ == "OK", "IMAP SELECT INBOX")
    typ, data = imap.uid("SEARCH", None, "ALL")
    check(typ == "OK", "IMAP UID SEARCH ALL")
    uids = data[0].split()
    for uid in uids:
        typ, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        check(typ == "OK", f"IMAP UID FETCH {uid.decode()} BODY.PEEK[]")
        raw = fetched[0][1]
        if token.encode() in raw:
            return uid, raw
    return None, None


def imap_flags(imap, uid):
    typ, data = imap.uid("FETCH", uid, "(FLAGS)")
    check(typ == "OK", "IMAP FETCH FLAGS")
    return imaplib.ParseFlags(data[0])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--smtp", required=True)
    p.add_argument("--imap", required=True)
    p.add_argument("--pop3", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--unknown")
    args = p.parse_args()

    token = uuid.uuid4().hex
    message = build_message("bob@example.test", args.user, token)
    smtp_send(args, message)

    # IMAP: byte-identical body, flags that survive a reconnect.
    imap = imap_login(args)
    uid, raw = imap_find(imap, token)
    check(uid is not None, "IMAP finds the message")
    check(raw != strip_trace(raw), "the server prepended trace headers")
    check(strip_trace(raw) == message, "IMAP body is byte-identical to what was sent")
    typ, _ = imap.uid("STORE", uid, "+FLAGS", r"(\Flagged $Important)")
    check(typ == "OK", "IMAP STORE +FLAGS")
    imap.logout()

    imap = imap_login(args)
    uid2, _ = imap_find(imap, token)
    check(uid2 == uid, "same UID after reconnect")
    flags = imap_flags(imap, uid)
    check(b"\\Flagged" in flags and b"$Important" in flags, f"flags survive reconnect {flags}")
    imap.logout()

    # POP3: byte-identical body, DELE + QUIT removes it for IMAP too.
    host, port = hostport(args.pop3)
    pop = poplib.POP3(host, port, timeout=30)
    pop.user(args.user)
    pop.pass_(args.password)
    count, _size = pop.stat()
    check(count >= 1, f"POP3 STAT counts {count} message(s)")
    found = None
    for n in range(1, count + 1):
        _resp, lines, _octets = pop.retr(n)
        raw = CRLF.join(lines) + CRLF
        if token.encode() in raw:
            found = n
            check(strip_trace(raw) == message, "POP3 body is byte-identical to what was sent")
    check(found is not None, "POP3 finds the message")
    pop.dele(found)
    pop.quit()

    imap = imap_login(args)
    uid3, _ = imap_find(imap, token)
    check(uid3 is None, "DELE + QUIT over POP3 removed the message for IMAP")
    imap.logout()

    pop = poplib.POP3(host, port, timeout=30)
    pop.user(args.user)
    pop.pass_(args.password)
    count_after, _ = pop.stat()
    check(count_after == count - 1, "POP3 STAT counts one message fewer")
    pop.quit()
    print("roundtrip: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # print the failing check, exit non-zero
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
