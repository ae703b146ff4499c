# The wattproof chaincode as a service, from the binary ledger/fabric/build-binaries.sh builds
# (.cache/fabric/chaincode/wattproof-cc, static). docker/chaincode.Dockerfile builds the same from source
# with the golang image where that image can be pulled.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
COPY .cache/fabric/chaincode/wattproof-cc /usr/local/bin/wattproof-cc
USER nobody
CMD ["wattproof-cc"]
