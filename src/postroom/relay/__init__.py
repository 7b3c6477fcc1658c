"""The SMTP submission relay: aiosmtpd sessions that feed raw MIME into the queue."""
