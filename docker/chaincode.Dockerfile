# The wattproof chaincode, run as a chaincode server (chaincode-as-a-service), built from source.
# (docker/images/chaincode.Dockerfile makes the same image from the binary ledger/fabric/build-binaries.sh
# builds, where no golang image can be pulled.) The runtime has a shell: compose.yaml reads the package
# id from the fabric volume before starting the server.
FROM golang:1.23 AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -o /wattproof-cc .
FROM debian:bookworm-slim
COPY --from=build /wattproof-cc /usr/local/bin/wattproof-cc
USER nobody
CMD ["wattproof-cc"]
