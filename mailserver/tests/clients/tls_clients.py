"""Python's own mail clients over TLS against the server's seven listeners.

argv: cafile smtp submission submissions imap imaps pop3 pop3s (host:port each).
Prints one JSON object of what each client saw; the Rust test asserts on it.
"""
import imaplib
import json
import poplib
import smtplib
import ssl
import sys

cafile = sys.argv[1]
smtp, submission, submissions, imap, imaps, pop3, pop3s = [
    (a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[2:9]
]
ctx = ssl.create_default_context(cafile=cafile)
out = {}

# MX with STARTTLS: deliver a message to alice over TLS.
with smtplib.SMTP(*smtp, local_hostname="client.test") as s:
    s.ehlo()
    out["smtp_offers_starttls"] = s.has_extn("starttls")
    s.starttls(context=ctx)
    s.ehlo()
    out["smtp_starttls_after"] = s.has_extn("starttls")
    out["smtp_cipher"] = s.sock.version()
    s.sendmail("bob@else.test", ["alice@example.test"], b"Subject: over tls\r\n\r\nhello\r\n")
    out["smtp_sent"] = True

# Submission on 587: MAIL before STARTTLS, then after it (no AUTH yet: refused either way).
with smtplib.SMTP(*submission, local_hostname="client.test") as s:
    s.ehlo()
    out["submission_plain_mail"] = list(s.mail("alice@example.test"))
    s.rset()
    s.starttls(context=ctx)
    s.ehlo()
    out["submission_tls_mail"] = list(s.mail("alice@example.test"))
for k in ("submission_plain_mail", "submission_tls_mail"):
    out[k][1] = out[k][1].decode()

# Submissions on 465: implicit TLS 1.3.
with smtplib.SMTP_SSL(*submissions, context=ctx, local_hostname="client.test") as s:
    s.ehlo()
    out["submissions_version"] = s.sock.version()
    code, text = s.mail("alice@example.test")
    out["submissions_mail"] = [code, text.decode()]

# IMAP on 143: LOGINDISABLED before STARTTLS, login after it.
m = imaplib.IMAP4(*imap)
out["imap_caps_before"] = sorted(m.capabilities)
try:
    m.login("alice@example.test", "secret")
    out["imap_plain_login"] = "accepted"
except imaplib.IMAP4.error as e:
    out["imap_plain_login"] = str(e)
m.starttls(ssl_context=ctx)
out["imap_caps_after"] = sorted(m.capabilities)
m.login("alice@example.test", "secret")
typ, data = m.select("INBOX")
out["imap_select"] = [typ, data[0].decode()]
m.logout()

# IMAPS on 993.
m = imaplib.IMAP4_SSL(*imaps, ssl_context=ctx)
out["imaps_version"] = m.sock.version()
m.login("alice@example.test", "secret")
typ, data = m.select("INBOX")
out["imaps_select"] = [typ, data[0].decode()]
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
out["imaps_subject"] = data[0][1].decode().strip()
m.logout()

# POP3 on 110: USER refused before STLS, accepted after.
p = poplib.POP3(*pop3)
out["pop3_capa_before"] = sorted(p.capa().keys())
try:
    p.user("alice@example.test")
    out["pop3_plain_user"] = "accepted"
except poplib.error_proto as e:
    out["pop3_plain_user"] = str(e)
p.stls(context=ctx)
out["pop3_capa_after"] = sorted(p.capa().keys())
p.user("alice@example.test")
p.pass_("secret")
out["pop3_stat"] = list(p.stat())
p.quit()

# POP3S on 995.
p = poplib.POP3_SSL(*pop3s, context=ctx)
p.user("alice@example.test")
p.pass_("secret")
out["pop3s_stat"] = list(p.stat())
p.quit()

print(json.dumps(out))
