#!/usr/bin/env bash
# Start a disposable single-node Ceph object gateway for tests: one monitor, one OSD backed by
# memory, one radosgw, all bound to 127.0.0.1 with cephx disabled. Nothing here is fit for real data.
#
# Environment:
#   KILN_CEPH_DIR   state directory (wiped first)          default: $TMPDIR/kiln-ceph-$UID
#   KILN_MON_PORT   monitor port                            default: 16789
#   KILN_RGW_PORT   S3 port                                 default: 17480
#   KILN_S3_ACCESS / KILN_S3_SECRET   credentials of the S3 user created   default: TESTKEY / TESTSECRET
# Prints one line "ready http://127.0.0.1:PORT" on success.
set -euo pipefail

dir=${KILN_CEPH_DIR:-${TMPDIR:-/tmp}/kiln-ceph-$(id -u)}
mon_port=${KILN_MON_PORT:-16789}
rgw_port=${KILN_RGW_PORT:-17480}
access=${KILN_S3_ACCESS:-TESTKEY}
secret=${KILN_S3_SECRET:-TESTSECRET}

for tool in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph-authtool ceph; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install radosgw ceph-mon ceph-osd ceph-common)" >&2; exit 3; }
done

rm -rf "$dir"
mkdir -p "$dir/mon" "$dir/osd" "$dir/rgw" "$dir/log" "$dir/run"
fsid=$(cat /proc/sys/kernel/random/uuid)
conf="$dir/ceph.conf"

# Pool size 1 and the relaxed health checks let a lone memstore OSD serve every pool.
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$mon_port]
mon_initial_members = a
public_network = 127.0.0.0/8
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 0
mon_data_avail_crit = 0
mon_max_pg_per_osd = 1000
osd_objectstore = memstore
memstore_device_bytes = 4294967296
osd_max_object_size = 1073741824
run_dir = $dir/run
admin_socket = $dir/run/\$name.asok
pid_file = $dir/run/\$name.pid
log_file = $dir/log/\$name.log
mon_data = $dir/mon
osd_data = $dir/osd

[client.rgw.kiln]
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port
rgw_data = $dir/rgw
rgw_dns_name = localhost
ms_mon_client_mode = crc
CONF

monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
ceph-mon -c "$conf" -i a

osd_uuid=$(cat /proc/sys/kernel/random/uuid)
osd_id=$(ceph -c "$conf" --connect-timeout 30 osd new "$osd_uuid")
ceph-osd -c "$conf" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" 2>/dev/null
ceph-osd -c "$conf" -i "$osd_id" 2>>"$dir/log/start.log"

radosgw -c "$conf" -n client.rgw.kiln 2>>"$dir/log/start.log"

up=0
for _ in $(seq 1 90); do
  if curl -fs -o /dev/null "http://127.0.0.1:$rgw_port/"; then up=1; break; fi
  sleep 0.5
done
if [ "$up" != 1 ]; then
  echo "radosgw did not answer on port $rgw_port; see $dir/log" >&2
  exit 1
fi
radosgw-admin -c "$conf" user create --uid=kiln-test --display-name=kiln-test --access-key="$access" --secret-key="$secret" >/dev/null
echo "ready http://127.0.0.1:$rgw_port"
