#!/usr/bin/env bash
# The Fabric network of docker/compose.yaml, set up in two one-shot steps (the containerised twin of
# ledger/fabric/network.py, `wattproof fabric up`, which is the tested reference of every step):
#
#   fabric-setup.sh crypto    before the nodes start: cryptogen material for OrdererMSP (one etcdraft
#                             orderer per name in $ORDERERS), Org1MSP and Org2MSP (a peer, an Admin and a
#                             User1 each, NodeOUs on), a bundle of every TLS CA, the channel's genesis block
#   fabric-setup.sh channel   once the nodes run: the orderers join the channel (osnadmin, channel
#                             participation, no system channel), both peers join, the chaincode is deployed
#                             as a service (package {type: ccaas, connection.json → chaincode:9999}, install
#                             on both peers, approve for both orgs, commit with the endorsement policy
#                             AND('Org1MSP.peer','Org2MSP.peer')), and the client profile is written
#
# Everything goes to $FABRIC_DIR (the shared `fabric` volume), laid out as a network directory of
# network.py: crypto/, channel/, chaincode/, profile.json, so `--ledger-dir` and `wattproof trust export
# --ledger fabric` read it the same way. The profile's paths are as the wattproof containers see the
# volume ($CLIENT_DIR). Both steps are idempotent: a rerun (compose up again) skips what is done.
set -euo pipefail
FABRIC_DIR=${FABRIC_DIR:-/fabric}
CLIENT_DIR=${CLIENT_DIR:-/etc/wattproof/fabric}
DOMAIN=wattproof.test
CHANNEL=wattproof
CHAINCODE=wattproof
CC_LABEL=wattproof_1
CC_ADDRESS=${CC_ADDRESS:-chaincode:9999}
POLICY="AND('Org1MSP.peer','Org2MSP.peer')"
read -r -a ORDERERS <<<"${ORDERERS:-orderer}"
crypto=$FABRIC_DIR/crypto
ord_org=$crypto/ordererOrganizations/$DOMAIN
log() { echo "[fabric-setup] $*" >&2; }

# retry N CMD...: Fabric's admin calls fail while a node is still starting; try again with a delay
retry() {
  local n=$1 i; shift
  for ((i = 1; i <= n; i++)); do
    if out=$("$@" 2>&1); then printf '%s\n' "$out"; return 0; fi
    [ "$i" -lt "$n" ] && sleep $((i < 5 ? i : 5))
  done
  printf '%s\n' "$out" | tail -n 8 >&2
  log "failed after $n attempts: $*"
  return 1
}

peer_org_dir() { echo "$crypto/peerOrganizations/$1.$DOMAIN"; }
peer_host() { echo "peer0.$1.$DOMAIN"; }
msp_id() { [ "$1" = org1 ] && echo Org1MSP || echo Org2MSP; }

step_crypto() {
  if [ -f "$FABRIC_DIR/channel/$CHANNEL.block" ]; then log "crypto material and genesis block present"; return; fi
  mkdir -p "$FABRIC_DIR/channel"
  {
    echo "OrdererOrgs:"
    echo "  - {Name: Orderer, Domain: $DOMAIN, EnableNodeOUs: true, Specs: ["
    for o in "${ORDERERS[@]}"; do echo "      {Hostname: $o, SANS: [$o, localhost]},"; done
    echo "    ]}"
    echo "PeerOrgs:"
    for org in org1 org2; do
      echo "  - {Name: $(msp_id $org | sed 's/MSP$//'), Domain: $org.$DOMAIN, EnableNodeOUs: true,"
      echo "     Template: {Count: 1, SANS: [peer0-$org, localhost]}, Users: {Count: 1}}"
    done
  } >"$FABRIC_DIR/crypto-config.yaml"
  rm -rf "$crypto"
  cryptogen generate --config "$FABRIC_DIR/crypto-config.yaml" --output "$crypto" >/dev/null
  # every node trusts every org's TLS CA from the start (gossip's first handshakes precede the channel config)
  cat "$(peer_org_dir org1)/tlsca/"*.pem "$(peer_org_dir org2)/tlsca/"*.pem "$ord_org/tlsca/"*.pem \
    >"$FABRIC_DIR/tls-roots.pem"
  # the client identities the wattproof containers (user nobody) sign with: readable by them
  for org in org1 org2; do chmod a+r "$(peer_org_dir $org)/users/User1@$org.$DOMAIN/msp/keystore/"*; done
  local cfg=$FABRIC_DIR/channel
  {
    cat <<YAML
Organizations:
  - &OrdererOrg
    Name: OrdererOrg
    ID: OrdererMSP
    MSPDir: $ord_org/msp
    Policies:
      Readers: {Type: Signature, Rule: "OR('OrdererMSP.member')"}
      Writers: {Type: Signature, Rule: "OR('OrdererMSP.member')"}
      Admins: {Type: Signature, Rule: "OR('OrdererMSP.admin')"}
    OrdererEndpoints:
YAML
    for o in "${ORDERERS[@]}"; do echo "      - $o.$DOMAIN:7050"; done
    for org in org1 org2; do
      local m; m=$(msp_id $org)
      cat <<YAML
  - &$m
    Name: $m
    ID: $m
    MSPDir: $(peer_org_dir $org)/msp
    Policies:
      Readers: {Type: Signature, Rule: "OR('$m.admin','$m.peer','$m.client')"}
      Writers: {Type: Signature, Rule: "OR('$m.admin','$m.client')"}
      Admins: {Type: Signature, Rule: "OR('$m.admin')"}
      Endorsement: {Type: Signature, Rule: "OR('$m.peer')"}
    AnchorPeers:
      - {Host: $(peer_host $org), Port: 7051}
YAML
    done
    cat <<YAML
Profiles:
  WattproofChannel:
    Policies:
      Readers: {Type: ImplicitMeta, Rule: "ANY Readers"}
      Writers: {Type: ImplicitMeta, Rule: "ANY Writers"}
      Admins: {Type: ImplicitMeta, Rule: "MAJORITY Admins"}
    Capabilities: {V2_0: true}
    Orderer:
      OrdererType: etcdraft
      BatchTimeout: 100ms
      BatchSize: {MaxMessageCount: 500, AbsoluteMaxBytes: 10 MB, PreferredMaxBytes: 2 MB}
      EtcdRaft:
        Consenters:
YAML
    for o in "${ORDERERS[@]}"; do
      local t=$ord_org/orderers/$o.$DOMAIN/tls
      echo "          - {Host: $o.$DOMAIN, Port: 7050, ClientTLSCert: $t/server.crt, ServerTLSCert: $t/server.crt}"
    done
    cat <<YAML
        Options: {TickInterval: 100ms, ElectionTick: 10, HeartbeatTick: 1, MaxInflightBlocks: 5, SnapshotIntervalSize: 16 MB}
      Organizations: [*OrdererOrg]
      Policies:
        Readers: {Type: ImplicitMeta, Rule: "ANY Readers"}
        Writers: {Type: ImplicitMeta, Rule: "ANY Writers"}
        Admins: {Type: ImplicitMeta, Rule: "MAJORITY Admins"}
        BlockValidation: {Type: ImplicitMeta, Rule: "ANY Writers"}
      Capabilities: {V2_0: true}
    Application:
      Organizations: [*Org1MSP, *Org2MSP]
      Policies:
        Readers: {Type: ImplicitMeta, Rule: "ANY Readers"}
        Writers: {Type: ImplicitMeta, Rule: "ANY Writers"}
        Admins: {Type: ImplicitMeta, Rule: "MAJORITY Admins"}
        LifecycleEndorsement: {Type: ImplicitMeta, Rule: "MAJORITY Endorsement"}
        Endorsement: {Type: ImplicitMeta, Rule: "MAJORITY Endorsement"}
      Capabilities: {V2_5: true}
YAML
  } >"$cfg/configtx.yaml"
  FABRIC_CFG_PATH=$cfg configtxgen -profile WattproofChannel -channelID "$CHANNEL" \
    -outputBlock "$cfg/$CHANNEL.block.tmp" 2>/dev/null
  mv "$cfg/$CHANNEL.block.tmp" "$cfg/$CHANNEL.block"
  log "crypto material for ${ORDERERS[*]}, org1, org2 and the genesis block of '$CHANNEL' written"
}

# environment of the `peer` CLI acting as ORG's admin against ORG's peer
peer_as() {
  local org=$1; shift
  env CORE_PEER_LOCALMSPID="$(msp_id "$org")" \
      CORE_PEER_MSPCONFIGPATH="$(peer_org_dir "$org")/users/Admin@$org.$DOMAIN/msp" \
      CORE_PEER_ADDRESS="$(peer_host "$org"):7051" CORE_PEER_TLS_ENABLED=true \
      CORE_PEER_TLS_ROOTCERT_FILE="$(peer_org_dir "$org")/tlsca/tlsca.$org.$DOMAIN-cert.pem" "$@"
}

step_channel() {
  local block=$FABRIC_DIR/channel/$CHANNEL.block adm=$ord_org/users/Admin@$DOMAIN/tls
  local ord_ca=$ord_org/tlsca/tlsca.$DOMAIN-cert.pem
  for o in "${ORDERERS[@]}"; do
    local osn=(osnadmin channel -o "$o.$DOMAIN:7053" --ca-file "$ord_ca" --client-cert "$adm/client.crt"
               --client-key "$adm/client.key")
    if retry 30 "${osn[@]}" list | grep -q "\"name\": \"$CHANNEL\""; then continue; fi
    retry 10 "${osn[@]}" join --channelID "$CHANNEL" --config-block "$block" >/dev/null
    log "$o joined '$CHANNEL'"
  done
  for org in org1 org2; do
    if retry 30 peer_as "$org" peer channel list | grep -qx "$CHANNEL"; then continue; fi
    retry 20 peer_as "$org" peer channel join -b "$block" >/dev/null
    log "peer0.$org joined '$CHANNEL'"
  done
  # the chaincode package: made once, so its id (label:sha256 of the file) stays the same on reruns
  local pkg=$FABRIC_DIR/chaincode/$CC_LABEL.tar.gz
  if [ ! -f "$pkg" ]; then
    local w; w=$(mktemp -d)
    mkdir -p "$FABRIC_DIR/chaincode"
    printf '{"address":"%s","dial_timeout":"10s","tls_required":false}\n' "$CC_ADDRESS" >"$w/connection.json"
    printf '{"type":"ccaas","label":"%s"}\n' "$CC_LABEL" >"$w/metadata.json"
    tar -C "$w" -czf "$w/code.tar.gz" connection.json
    tar -C "$w" -czf "$pkg.tmp" metadata.json code.tar.gz
    mv "$pkg.tmp" "$pkg"
    rm -rf "$w"
  fi
  local id; id=$(peer_as org1 peer lifecycle chaincode calculatepackageid "$pkg")
  for org in org1 org2; do
    if retry 10 peer_as "$org" peer lifecycle chaincode queryinstalled | grep -q "Package ID: $id,"; then continue; fi
    retry 10 peer_as "$org" peer lifecycle chaincode install "$pkg" >/dev/null
    log "chaincode $id installed on peer0.$org"
  done
  echo "$id" >"$FABRIC_DIR/chaincode/package-id"
  local common=(--channelID "$CHANNEL" --name "$CHAINCODE" --version 1 --sequence 1 --signature-policy "$POLICY")
  local ord=(-o "${ORDERERS[0]}.$DOMAIN:7050" --tls --cafile "$ord_ca")
  if ! peer_as org1 peer lifecycle chaincode querycommitted --channelID "$CHANNEL" --name "$CHAINCODE" >/dev/null 2>&1; then
    for org in org1 org2; do
      retry 20 peer_as "$org" peer lifecycle chaincode approveformyorg "${ord[@]}" "${common[@]}" --package-id "$id" >/dev/null
    done
    local peers=()
    for org in org1 org2; do
      peers+=(--peerAddresses "$(peer_host $org):7051" --tlsRootCertFiles "$(peer_org_dir $org)/tlsca/tlsca.$org.$DOMAIN-cert.pem")
    done
    retry 20 peer_as org1 peer lifecycle chaincode commit "${ord[@]}" "${common[@]}" "${peers[@]}" >/dev/null
    log "chaincode '$CHAINCODE' committed on '$CHANNEL' with policy $POLICY"
  fi
  write_profile
}

# The client profile (docs/fabric.md): each org's Gateway peer, its TLS CA and its User1 identity.
write_profile() {
  local c=$CLIENT_DIR/crypto/peerOrganizations
  key_of() { basename "$(ls "$(peer_org_dir "$1")/users/User1@$1.$DOMAIN/msp/keystore/"*)"; }
  cat >"$FABRIC_DIR/profile.json.tmp" <<JSON
{
  "channel": "$CHANNEL",
  "chaincode": "$CHAINCODE",
  "peers": {"org1": "$(peer_host org1):7051", "org2": "$(peer_host org2):7051"},
  "tls_ca": {"org1": "$c/org1.$DOMAIN/tlsca/tlsca.org1.$DOMAIN-cert.pem",
             "org2": "$c/org2.$DOMAIN/tlsca/tlsca.org2.$DOMAIN-cert.pem"},
  "msp_id": {"org1": "Org1MSP", "org2": "Org2MSP"},
  "user_cert": {"org1": "$c/org1.$DOMAIN/users/User1@org1.$DOMAIN/msp/signcerts/User1@org1.$DOMAIN-cert.pem",
                "org2": "$c/org2.$DOMAIN/users/User1@org2.$DOMAIN/msp/signcerts/User1@org2.$DOMAIN-cert.pem"},
  "user_key": {"org1": "$c/org1.$DOMAIN/users/User1@org1.$DOMAIN/msp/keystore/$(key_of org1)",
               "org2": "$c/org2.$DOMAIN/users/User1@org2.$DOMAIN/msp/keystore/$(key_of org2)"}
}
JSON
  mv "$FABRIC_DIR/profile.json.tmp" "$FABRIC_DIR/profile.json"
  log "client profile written: $FABRIC_DIR/profile.json (paths as mounted at $CLIENT_DIR)"
}

case "${1:-}" in
  crypto) step_crypto ;;
  channel) step_channel ;;
  *) echo "usage: fabric-setup.sh crypto|channel" >&2; exit 2 ;;
esac
