#!/bin/sh
# Install Postfix's smtp-sink (Debian package "postfix") without configuring or
# starting the Postfix daemon. Needs root. Same steps as `python bench/sink.py install`.
set -eu
if [ -x /usr/sbin/smtp-sink ]; then
    echo /usr/sbin/smtp-sink
    exit 0
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# no service starts while installing\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends postfix
echo /usr/sbin/smtp-sink
