"""The on-disk adapter registry: versioned LoRA adapters, their status, and an audit log.

`registry` holds the state machine (one state.json replaced atomically), `validate` the checks an
adapter passes before it is stored or served, `versions` the vocabulary both share.
"""

from adapters.registry.registry import Registry
from adapters.registry.validate import check_loadable
from adapters.registry.versions import (STATUSES, AdapterRejected, AdapterVersion, Change, InvalidTransition,
                                        NotFound, RegistryError, Resolution, check_share, parse_version_id,
                                        same_base_model)

__all__ = ["Registry", "check_loadable", "STATUSES", "AdapterRejected", "AdapterVersion", "Change",
           "InvalidTransition", "NotFound", "RegistryError", "Resolution", "check_share", "parse_version_id",
           "same_base_model"]
