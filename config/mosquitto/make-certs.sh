#!/usr/bin/env bash
# Make a private CA and a TLS server certificate for the edge box's Mosquitto.
#
#   bash config/mosquitto/make-certs.sh OUT_DIR NAME [NAME ...]
#
# NAME: every host name or IP address that clients use to reach the broker. Clients check
# the certificate against the name they connected to, so list them all: the box's LAN
# address and DNS name for the devices, and 127.0.0.1 / localhost for sentinel on the box.
#
#   bash config/mosquitto/make-certs.sh /root/mqtt-pki edge-shuibei.lan 192.168.10.2 \
#        127.0.0.1 localhost
#
# Writes into OUT_DIR:
#   ca.key      the CA's private key (mode 0600). Keep it OFF the edge box once done: whoever
#               holds it can impersonate the broker to every device.
#   ca.crt      the CA certificate: give it to the devices and to sentinel
#               ([mqtt.tls] ca_file); it is public.
#   server.key  the broker's private key (mode 0600; install as root:mosquitto 0640).
#   server.crt  the broker's certificate, signed by the CA, naming every NAME.
#
# When OUT_DIR already holds ca.key and ca.crt, the CA is reused and only a new server key
# and certificate are made (a new box name or address, or renewal before expiry): devices
# keep trusting the broker without any change on their side.
#
# Keys are RSA (CA 3072 bits, server 2048 bits): the one algorithm every TLS stack of
# the devices we meet supports (ESP-IDF mbedTLS, Zigbee2MQTT's Node.js, The Things Stack's
# Go, paho). Validity: CA 10 years (CA_DAYS), server 825 days (SERVER_DAYS).
set -euo pipefail

usage() {
    echo "usage: $0 OUT_DIR NAME [NAME ...]   (NAME: host name or IP address of the broker)" >&2
    exit 2
}
[[ $# -ge 2 ]] || usage
command -v openssl >/dev/null || { echo "$0: openssl not found (apt-get install openssl)" >&2; exit 1; }

out=$1
shift
ca_days=${CA_DAYS:-3650}
server_days=${SERVER_DAYS:-825}
ca_name=${CA_NAME:-sentinel edge MQTT CA}

# subjectAltName: IPv4/IPv6 addresses as IP:, everything else as DNS:.
san=""
for name in "$@"; do
    if [[ $name =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || $name == *:* ]]; then
        entry="IP:$name"
    elif [[ $name =~ ^[A-Za-z0-9*]([A-Za-z0-9.*-]*[A-Za-z0-9])?$ ]]; then
        entry="DNS:$name"
    else
        echo "$0: '$name' is neither a host name nor an IP address" >&2
        exit 2
    fi
    san="${san:+$san,}$entry"
done

mkdir -p "$out"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ -f $out/ca.key && -f $out/ca.crt ]]; then
    echo "reusing the CA in $out (ca.key, ca.crt)"
else
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$out/ca.key" 2>/dev/null
    # Marked as a CA that can only sign end certificates (pathlen:0), with the key usages
    # strict verifiers (Python 3.13+, OpenSSL's X509_STRICT) insist on.
    openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$ca_days" \
        -subj "/CN=$ca_name" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$out/ca.crt"
    echo "made a new CA: $out/ca.crt (key $out/ca.key — keep it off the edge box)"
fi

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/server.key" 2>/dev/null
openssl req -new -key "$work/server.key" -subj "/CN=$1" -out "$work/server.csr"
cat >"$work/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
openssl x509 -req -in "$work/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -CAserial "$out/ca.srl" -sha256 -days "$server_days" \
    -extfile "$work/server.ext" -out "$work/server.crt" 2>/dev/null
openssl verify -CAfile "$out/ca.crt" "$work/server.crt" >/dev/null
mv "$work/server.key" "$out/server.key"
mv "$work/server.crt" "$out/server.crt"
chmod 0644 "$out/ca.crt" "$out/server.crt"

echo "made $out/server.crt for $san (valid $server_days days), key $out/server.key"
echo "install on the edge box (Debian):"
echo "  install -m 0644 $out/ca.crt /etc/mosquitto/ca_certificates/ca.crt"
echo "  install -m 0644 $out/server.crt /etc/mosquitto/certs/server.crt"
echo "  install -m 0640 -o root -g mosquitto $out/server.key /etc/mosquitto/certs/server.key"
echo "  install -m 0644 $out/ca.crt /etc/sentinel/mqtt-ca.crt   # sentinel's [mqtt.tls] ca_file"
