#!/bin/sh
# certbot --manual hook for DNS-01 through RFC 2136 (dynamic update with a TSIG
# key, nsupdate from bind9-dnsutils): writes and removes the _acme-challenge TXT
# record in the zone tlsactl keeps the TLSA records in, with the same key file.
#
#   certbot certonly --manual --preferred-challenges dns -d mx.example.nl \
#       --manual-auth-hook '/usr/local/lib/tlsactl/certbot-rfc2136-hook.sh add' \
#       --manual-cleanup-hook '/usr/local/lib/tlsactl/certbot-rfc2136-hook.sh delete' \
#       --deploy-hook /usr/local/lib/tlsactl/certbot-deploy-hook.sh
#
# certbot stores both hooks in the renewal configuration: `certbot renew` runs
# them again. certbot sets CERTBOT_DOMAIN and CERTBOT_VALIDATION.
#   RFC2136_SERVER    the primary that takes updates   (default: 127.0.0.1)
#   RFC2136_PORT      its port                         (default: 53)
#   RFC2136_KEY_FILE  TSIG key in BIND format (tsig-keygen; tlsactl's
#                     tsig_key_file)                   (default: /etc/tlsactl/tsig.key)
#   RFC2136_ZONE      the zone                         (default: nsupdate asks the server's SOA)
#   RFC2136_TTL       TTL of the TXT record            (default: 60)
#   RFC2136_CHECK     "addr[#port] ..." servers that must answer the TXT before
#                     the CA is told to validate (default: the primary); name
#                     every authoritative server, secondaries included
#   RFC2136_WAIT      seconds to wait for them         (default: 120)
#
# "add" returns once every RFC2136_CHECK server answers the TXT record (dig
# from bind9-dnsutils), or fails after RFC2136_WAIT seconds; "delete" removes
# this challenge's value only. An _acme-challenge name that is a CNAME on the
# primary is followed once: the record goes to its target (which that server
# must also take updates for). The key is read from its file, never put on a
# command line.
set -eu
action=${1:-}
case "$action" in
add | delete) ;;
*)
	echo "usage: $0 add|delete (certbot's --manual-auth-hook / --manual-cleanup-hook)" >&2
	exit 2
	;;
esac
: "${CERTBOT_DOMAIN:?is not set: run this from certbot --manual-auth-hook or --manual-cleanup-hook}"
: "${CERTBOT_VALIDATION:?is not set: run this from certbot --manual-auth-hook or --manual-cleanup-hook}"
server=${RFC2136_SERVER:-127.0.0.1}
port=${RFC2136_PORT:-53}
key=${RFC2136_KEY_FILE:-/etc/tlsactl/tsig.key}
ttl=${RFC2136_TTL:-60}
name="_acme-challenge.${CERTBOT_DOMAIN%.}."
[ -r "$key" ] || {
	echo "$0: TSIG key file $key is not readable: set RFC2136_KEY_FILE" >&2
	exit 2
}

# A CNAME'd _acme-challenge (the challenge delegated to another name or
# zone, as many operators do): the CA follows the CNAME, so the TXT record
# is written at its target. RFC2136_ZONE names the domain's zone, so it is
# dropped and nsupdate asks the server which zone holds the target.
target=$(dig +short +norecurse +time=2 +tries=2 -p "$port" "@$server" "$name" CNAME | head -n 1)
if [ -n "$target" ]; then
	name=$target
	RFC2136_ZONE=
fi

# Over TCP (-v), as tlsactl sends its own updates: a busy primary may let a
# UDP update time out. Adding or deleting the one value is idempotent, so a
# failed attempt is tried again (three attempts in all).
update() {
	{
		echo "server $server $port"
		[ -z "${RFC2136_ZONE:-}" ] || echo "zone ${RFC2136_ZONE%.}."
		echo "update $action $name $ttl IN TXT \"$CERTBOT_VALIDATION\""
		echo "send"
	} | nsupdate -v -t 20 -k "$key"
}
tries=1
until update; do
	if [ "$tries" -ge 3 ]; then
		echo "$0: nsupdate ($action $name TXT at $server port $port) failed $tries times" >&2
		exit 1
	fi
	tries=$((tries + 1))
	sleep 1
done
[ "$action" = add ] || exit 0

# certbot has the CA validate as soon as this hook returns: wait until every
# server answers the new value.
deadline=$(($(date +%s) + ${RFC2136_WAIT:-120}))
for s in ${RFC2136_CHECK:-$server#$port}; do
	addr=${s%%#*}
	p=53
	[ "$addr" = "$s" ] || p=${s#*#}
	until dig +short +norecurse +time=2 +tries=1 -p "$p" "@$addr" "$name" TXT | grep -qF "\"$CERTBOT_VALIDATION\""; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "$0: $addr port $p does not answer $name TXT after ${RFC2136_WAIT:-120}s" >&2
			exit 1
		fi
		sleep 1
	done
done
