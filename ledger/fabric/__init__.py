"""The Hyperledger Fabric backend: a local network driver (``network``) for tests, the demo and
``wattproof fabric up``, and the Gateway client (``gateway``) that anchors batch headers through the
Fabric Gateway gRPC API. The Go chaincode lives in ``ledger/chaincode/``.
"""
