# Real clients logging in: Python's smtplib, imaplib and poplib with PLAIN, LOGIN and
# SCRAM-SHA-256 (a client written here from RFC 5802 with hashlib/hmac, independent of the
# server's code). Prints one JSON object of what happened; the Rust test asserts on it.
#
# usage: auth_clients.py CAFILE MODE ARGS...
#   smtp   HOST:SUBMISSION HOST:SUBMISSIONS HOST:MX HOST:SUBMISSION_NO_PLAINTEXT USER PASSWORD
#   imap   HOST:IMAPS USER PASSWORD
#   pop3   HOST:POP3S USER PASSWORD
#   scram  HOST:SUBMISSIONS HOST:IMAPS HOST:POP3S USER PASSWORD
import base64
import hashlib
import hmac
import imaplib
import json
import os
import poplib
import smtplib
import ssl
import sys
import time

cafile, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
ctx = ssl.create_default_context(cafile=cafile)
out = {}


def hostport(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


class Scram:
    """An RFC 5802 SCRAM-SHA-256 client (no channel binding)."""

    def __init__(self, user, password):
        self.user, self.password = user, password
        self.nonce = b64(os.urandom(18))
        self.bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"), self.nonce)
        self.step = 0
        self.verified = False

    def __call__(self, challenge):
        """Takes the server's (decoded) challenge, returns the client's (raw) response."""
        challenge = challenge.decode() if isinstance(challenge, bytes) else challenge
        self.step += 1
        if self.step == 1:
            return "n,," + self.bare
        if self.step == 2:
            attrs = dict(kv.split("=", 1) for kv in challenge.split(","))
            assert attrs["r"].startswith(self.nonce), challenge
            salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
            salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
            client_key = hmac.new(salted, b"Client Key", "sha256").digest()
            stored_key = hashlib.sha256(client_key).digest()
            without_proof = "c=biws,r=" + attrs["r"]
            self.auth_message = ("%s,%s,%s" % (self.bare, challenge, without_proof)).encode()
            signature = hmac.new(stored_key, self.auth_message, "sha256").digest()
            proof = bytes(a ^ b for a, b in zip(client_key, signature))
            self.server_key = hmac.new(salted, b"Server Key", "sha256").digest()
            return without_proof + ",p=" + b64(proof)
        expected = "v=" + b64(hmac.new(self.server_key, self.auth_message, "sha256").digest())
        self.verified = challenge == expected
        return ""


def smtp_login(smtp, mechanism, user, password):
    """AUTH with smtplib's own PLAIN/LOGIN code; (code, text, seconds)."""
    smtp.user, smtp.password = user, password
    method = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login}[mechanism]
    started = time.monotonic()
    try:
        code, text = smtp.auth(mechanism, method)
    except smtplib.SMTPAuthenticationError as e:
        code, text = e.smtp_code, e.smtp_error
    return code, text.decode(errors="replace"), time.monotonic() - started


def send_as(smtp, user):
    smtp.sendmail(user, [user], "Subject: sent after AUTH\r\n\r\nhello\r\n")


if mode == "smtp":
    submission, submissions, mx, no_plaintext, user, password = args
    host, port = hostport(submission)
    # Submission on 587: STARTTLS, then PLAIN (with the initial response), then mail.
    with smtplib.SMTP(host, port) as s:
        s.ehlo()
        out["auth_before_tls_advertised"] = s.has_extn("auth")
        s.starttls(context=ctx)
        s.ehlo()
        out["auth_after_tls"] = s.esmtp_features.get("auth", "")
        out["mail_before_auth"] = list(s.docmd("MAIL FROM:<%s>" % user))
        s.rset()
        out["wrong_password"] = smtp_login(s, "PLAIN", user, password + "x")
        out["unknown_user"] = smtp_login(s, "LOGIN", "nobody@example.test", password)
        out["plain"] = smtp_login(s, "PLAIN", user, password)
        out["auth_again"] = list(s.docmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password))))
        send_as(s, user)
        out["plain_sent"] = True
    # Submissions on 465: implicit TLS, LOGIN without initial response.
    host, port = hostport(submissions)
    with smtplib.SMTP_SSL(host, port, context=ctx) as s:
        s.ehlo()
        s.user, s.password = user, password
        code, text = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        out["login"] = [code, text.decode()]
        send_as(s, user)
        out["login_sent"] = True
        # Cancel with `*` on a fresh connection's exchange.
    with smtplib.SMTP_SSL(host, port, context=ctx) as s:
        s.ehlo()
        code, text = s.docmd("AUTH LOGIN")
        out["cancel_challenge"] = [code, text.decode()]
        out["cancel"] = list(s.docmd("*"))
        out["unknown_mechanism"] = list(s.docmd("AUTH CRAM-MD5"))
        out["bad_base64"] = list(s.docmd("AUTH PLAIN !!!"))
    # The MX listener offers no AUTH, even after STARTTLS.
    host, port = hostport(mx)
    with smtplib.SMTP(host, port) as s:
        s.starttls(context=ctx)
        s.ehlo()
        out["mx_advertises"] = s.has_extn("auth")
        out["mx_auth"] = list(s.docmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password))))
    # Submission where clear-text logins are refused: no AUTH before STARTTLS, 538 if tried.
    host, port = hostport(no_plaintext)
    with smtplib.SMTP(host, port) as s:
        s.ehlo()
        out["strict_advertises_before_tls"] = s.has_extn("auth")
        out["strict_auth_before_tls"] = list(
            s.docmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password)))
        )
    for key, value in list(out.items()):
        if isinstance(value, list):
            out[key] = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in value]

elif mode == "imap":
    imaps, user, password = args
    host, port = hostport(imaps)
    m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
    out["capabilities"] = sorted(m.capabilities)
    # AUTHENTICATE PLAIN with SASL-IR: the response on the command line, no continuation.
    typ, data = m._simple_command("AUTHENTICATE", "PLAIN", b64("\0%s\0%s" % (user, password)))
    out["sasl_ir"] = [typ, data[0].decode() if data and data[0] else ""]
    m.logout()
    m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
    try:
        m.login(user, password + "x")
        out["wrong_login"] = "OK"
    except imaplib.IMAP4.error as e:
        out["wrong_login"] = str(e)
    out["login"] = m.login(user, password)[0]
    out["select"] = m.select("INBOX")[0]
    m.logout()
    # AUTHENTICATE LOGIN through imaplib's continuation handling.
    m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
    answers = iter([user, password])
    out["authenticate_login"] = m.authenticate("LOGIN", lambda _: next(answers))[0]
    m.logout()

elif mode == "pop3":
    pop3s, user, password = args
    host, port = hostport(pop3s)
    p = poplib.POP3_SSL(host, port, context=ctx)
    out["capa_sasl"] = [c.decode() if isinstance(c, bytes) else c for c in p.capa().get("SASL", [])]
    try:
        p._shortcmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password + "x")))
        out["wrong"] = "+OK"
    except poplib.error_proto as e:
        out["wrong"] = e.args[0].decode()
    out["auth_plain"] = p._shortcmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password))).decode()
    out["stat"] = list(p.stat())
    p.quit()
    p = poplib.POP3_SSL(host, port, context=ctx)
    p.user(user)
    out["user_pass"] = p.pass_(password).decode()
    p.quit()

elif mode == "scram":
    submissions, imaps, pop3s, user, password = args
    # IMAP, through imaplib's AUTHENTICATE continuation handling.
    host, port = hostport(imaps)
    for label, pw in [("imap_wrong", password + "x"), ("imap", password)]:
        m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
        client = Scram(user, pw)
        try:
            out[label] = m.authenticate("SCRAM-SHA-256", client)[0]
            out[label + "_server_verified"] = client.verified
            out[label + "_select"] = m.select("INBOX")[0]
        except imaplib.IMAP4.error as e:
            out[label] = str(e)
        m.shutdown()
    m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
    try:
        out["imap_unknown"] = m.authenticate("SCRAM-SHA-256", Scram("nobody@example.test", pw))[0]
    except imaplib.IMAP4.error as e:
        out["imap_unknown"] = str(e)
    m.shutdown()
    # SMTP, through smtplib's AUTH loop.
    host, port = hostport(submissions)
    with smtplib.SMTP_SSL(host, port, context=ctx) as s:
        s.ehlo()
        client = Scram(user, password)
        try:
            code, text = s.auth("SCRAM-SHA-256", client, initial_response_ok=False)
            out["smtp"] = [code, text.decode()]
            out["smtp_server_verified"] = client.verified
            send_as(s, user)
        except smtplib.SMTPAuthenticationError as e:
            out["smtp"] = [e.smtp_code, e.smtp_error.decode()]
    # POP3, line by line with poplib.
    host, port = hostport(pop3s)
    p = poplib.POP3_SSL(host, port, context=ctx)
    client = Scram(user, password)
    try:
        line = p._shortcmd("AUTH SCRAM-SHA-256 " + b64(client(b"")))
        line = p._shortcmd(b64(client(base64.b64decode(line[2:]))))
        line = p._shortcmd(b64(client(base64.b64decode(line[2:]))))
        out["pop3"] = line.decode()
        out["pop3_server_verified"] = client.verified
    except poplib.error_proto as e:
        out["pop3"] = e.args[0].decode()
    p.quit()

print(json.dumps(out))
