"""The ``cti.v1`` contracts: ``directory_pb2``/``events_pb2`` messages and
``*_pb2_grpc`` stubs, generated from the ``.proto`` files beside them by ``make proto``."""
