"""Python's own mail clients logging in from a chosen loopback source address.

argv: PROTO HOST:PORT SOURCE USER PASSWORD COUNT
PROTO is pop3, imap or smtp (smtp only connects and says EHLO: no AUTH to try yet).
Makes COUNT attempts, each on a new connection bound to SOURCE, and prints one JSON list:
[outcome, seconds] per attempt, outcome "ok", "failed: <reply>" or "refused: <greeting>".
"""
import imaplib
import json
import poplib
import smtplib
import socket
import sys
import time

proto, addr, source, user, password, count = sys.argv[1:7]
host, port = addr.rsplit(":", 1)
port = int(port)


class Pop3From(poplib.POP3):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(source, 0))


class Imap4From(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(source, 0))


def text(err):
    arg = err.args[-1] if err.args else err
    if isinstance(arg, bytes):
        arg = arg.decode(errors="replace")
    return str(arg)


def pop3():
    try:
        client = Pop3From(host, port, timeout=20)
    except (poplib.error_proto, OSError) as err:
        return "refused: " + text(err)
    try:
        client.user(user)
        client.pass_(password)
    except poplib.error_proto as err:
        return "failed: " + text(err)
    client.quit()
    return "ok"


def imap():
    try:
        client = Imap4From(host, port, timeout=20)
    except (imaplib.IMAP4.error, OSError) as err:
        return "refused: " + text(err)
    try:
        client.login(user, password)
    except imaplib.IMAP4.error as err:
        return "failed: " + text(err)
    client.logout()
    return "ok"


def smtp():
    try:
        client = smtplib.SMTP(host, port, source_address=(source, 0), timeout=20)
    except (smtplib.SMTPException, OSError) as err:
        parts = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in err.args]
        return "refused: " + " ".join(parts)
    client.ehlo("client.test")
    client.quit()
    return "ok"


attempt = {"pop3": pop3, "imap": imap, "smtp": smtp}[proto]
results = []
for _ in range(int(count)):
    start = time.monotonic()
    outcome = attempt()
    results.append([outcome, round(time.monotonic() - start, 3)])
print(json.dumps(results))
