# The wattproof chaincode, run as a chaincode server (chaincode-as-a-service).
FROM golang:1.22 AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -o /chaincode .
FROM gcr.io/distroless/static
COPY --from=build /chaincode /chaincode
ENTRYPOINT ["/chaincode"]
