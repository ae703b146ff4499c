# Hyperledger Fabric v2.5.9 nodes and tools in one image: peer, orderer, osnadmin, configtxgen and cryptogen,
# built from the Go module proxy (ledger/fabric/build-binaries.sh, CGO_ENABLED=0) and copied in, with
# Fabric's sampleconfig in /etc/hyperledger/fabric as in the hyperledger/fabric-* images. compose.yaml
# runs it as the orderer (`orderer`), a peer (`peer node start`) or the one-shot setup (`bash …`).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
COPY .cache/fabric/v2.5.9/bin/ /usr/local/bin/
COPY .cache/fabric/v2.5.9/config/ /etc/hyperledger/fabric/
ENV FABRIC_CFG_PATH=/etc/hyperledger/fabric
WORKDIR /var/hyperledger
CMD ["peer", "node", "start"]
