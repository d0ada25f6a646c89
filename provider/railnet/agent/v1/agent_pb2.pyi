from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnsureEnvironmentRequest(_message.Message):
    __slots__ = ("env_id", "key_rotation")
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ROTATION_FIELD_NUMBER: _ClassVar[int]
    env_id: str
    key_rotation: str
    def __init__(self, env_id: _Optional[str] = ..., key_rotation: _Optional[str] = ...) -> None: ...

class EnsureEnvironmentResponse(_message.Message):
    __slots__ = ("node", "public_key", "endpoint", "key_rotation", "document_formats")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    KEY_ROTATION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FORMATS_FIELD_NUMBER: _ClassVar[int]
    node: str
    public_key: str
    endpoint: str
    key_rotation: str
    document_formats: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node: _Optional[str] = ..., public_key: _Optional[str] = ..., endpoint: _Optional[str] = ..., key_rotation: _Optional[str] = ..., document_formats: _Optional[_Iterable[int]] = ...) -> None: ...

class ApplyDocumentRequest(_message.Message):
    __slots__ = ("document_json", "expected_generation", "delta_json")
    DOCUMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    DELTA_JSON_FIELD_NUMBER: _ClassVar[int]
    document_json: str
    expected_generation: int
    delta_json: str
    def __init__(self, document_json: _Optional[str] = ..., expected_generation: _Optional[int] = ..., delta_json: _Optional[str] = ...) -> None: ...

class ApplyDocumentResponse(_message.Message):
    __slots__ = ("generation", "changes")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    generation: int
    changes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, generation: _Optional[int] = ..., changes: _Optional[_Iterable[str]] = ...) -> None: ...

class GetDocumentRequest(_message.Message):
    __slots__ = ("env_id", "known_digest")
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    env_id: str
    known_digest: str
    def __init__(self, env_id: _Optional[str] = ..., known_digest: _Optional[str] = ...) -> None: ...

class GetDocumentResponse(_message.Message):
    __slots__ = ("found", "document_json", "document_formats", "digest", "unchanged", "generation", "delta_version")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FORMATS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DELTA_VERSION_FIELD_NUMBER: _ClassVar[int]
    found: bool
    document_json: str
    document_formats: _containers.RepeatedScalarFieldContainer[int]
    digest: str
    unchanged: bool
    generation: int
    delta_version: int
    def __init__(self, found: _Optional[bool] = ..., document_json: _Optional[str] = ..., document_formats: _Optional[_Iterable[int]] = ..., digest: _Optional[str] = ..., unchanged: _Optional[bool] = ..., generation: _Optional[int] = ..., delta_version: _Optional[int] = ...) -> None: ...

class DeleteEnvironmentRequest(_message.Message):
    __slots__ = ("env_id", "expected_generation")
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    env_id: str
    expected_generation: int
    def __init__(self, env_id: _Optional[str] = ..., expected_generation: _Optional[int] = ...) -> None: ...

class DeleteEnvironmentResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("env_id",)
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    env_id: str
    def __init__(self, env_id: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("node", "environments", "documents", "document_formats")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FORMATS_FIELD_NUMBER: _ClassVar[int]
    node: str
    environments: _containers.RepeatedCompositeFieldContainer[EnvironmentStatus]
    documents: _containers.RepeatedCompositeFieldContainer[HeldDocument]
    document_formats: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node: _Optional[str] = ..., environments: _Optional[_Iterable[_Union[EnvironmentStatus, _Mapping]]] = ..., documents: _Optional[_Iterable[_Union[HeldDocument, _Mapping]]] = ..., document_formats: _Optional[_Iterable[int]] = ...) -> None: ...

class HeldDocument(_message.Message):
    __slots__ = ("env_id", "project", "environment", "generation", "hosted", "format")
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HOSTED_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    env_id: str
    project: str
    environment: str
    generation: int
    hosted: bool
    format: int
    def __init__(self, env_id: _Optional[str] = ..., project: _Optional[str] = ..., environment: _Optional[str] = ..., generation: _Optional[int] = ..., hosted: _Optional[bool] = ..., format: _Optional[int] = ...) -> None: ...

class EnvironmentStatus(_message.Message):
    __slots__ = ("env_id", "project", "environment", "generation", "netns", "listen_port", "public_key", "peers", "instances", "drift", "records", "lost")
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    LISTEN_PORT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    env_id: str
    project: str
    environment: str
    generation: int
    netns: str
    listen_port: int
    public_key: str
    peers: _containers.RepeatedCompositeFieldContainer[PeerStatus]
    instances: _containers.RepeatedCompositeFieldContainer[InstanceStatus]
    drift: _containers.RepeatedScalarFieldContainer[str]
    records: _containers.RepeatedCompositeFieldContainer[DnsRecord]
    lost: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, env_id: _Optional[str] = ..., project: _Optional[str] = ..., environment: _Optional[str] = ..., generation: _Optional[int] = ..., netns: _Optional[str] = ..., listen_port: _Optional[int] = ..., public_key: _Optional[str] = ..., peers: _Optional[_Iterable[_Union[PeerStatus, _Mapping]]] = ..., instances: _Optional[_Iterable[_Union[InstanceStatus, _Mapping]]] = ..., drift: _Optional[_Iterable[str]] = ..., records: _Optional[_Iterable[_Union[DnsRecord, _Mapping]]] = ..., lost: _Optional[_Iterable[str]] = ...) -> None: ...

class PeerStatus(_message.Message):
    __slots__ = ("node", "public_key", "endpoint", "last_handshake", "rx_bytes", "tx_bytes", "allowed_ips")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    LAST_HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_IPS_FIELD_NUMBER: _ClassVar[int]
    node: str
    public_key: str
    endpoint: str
    last_handshake: int
    rx_bytes: int
    tx_bytes: int
    allowed_ips: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[str] = ..., public_key: _Optional[str] = ..., endpoint: _Optional[str] = ..., last_handshake: _Optional[int] = ..., rx_bytes: _Optional[int] = ..., tx_bytes: _Optional[int] = ..., allowed_ips: _Optional[_Iterable[str]] = ...) -> None: ...

class InstanceStatus(_message.Message):
    __slots__ = ("service", "service_id", "index", "netns", "ipv4", "ipv6")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    IPV4_FIELD_NUMBER: _ClassVar[int]
    IPV6_FIELD_NUMBER: _ClassVar[int]
    service: str
    service_id: str
    index: int
    netns: str
    ipv4: str
    ipv6: str
    def __init__(self, service: _Optional[str] = ..., service_id: _Optional[str] = ..., index: _Optional[int] = ..., netns: _Optional[str] = ..., ipv4: _Optional[str] = ..., ipv6: _Optional[str] = ...) -> None: ...

class DnsRecord(_message.Message):
    __slots__ = ("name", "type", "value", "ttl")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    value: str
    ttl: int
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., value: _Optional[str] = ..., ttl: _Optional[int] = ...) -> None: ...
