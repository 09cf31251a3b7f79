"""Typed application state shared by the HTTP layer."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from ..auth import ClientSecretStore
from ..config import Settings
from ..ice.gather import IceSetup
from ..ice.handoff import MediaHandoff
from ..ops.metrics import RelayMetrics
from ..registry import CallRegistry
from ..shards import ShardClient, ShardLayout
from ..upstream.openai import OpenAIConnector

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CallRegistry)
CLIENT_SECRETS = web.AppKey("client_secrets", ClientSecretStore)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
CONNECTOR = web.AppKey("connector", OpenAIConnector)
SHARD = web.AppKey("shard", ShardLayout)
METRICS = web.AppKey("metrics", RelayMetrics)
SHARD_CLIENT = web.AppKey("shard_client", ShardClient)
#: The process's ICE choices and ICE-TCP mux (the listener sets the TCP port).
ICE = web.AppKey("ice", IceSetup)
#: Passes ICE-TCP connections between shards (``serve --workers N`` only).
MEDIA_HANDOFF = web.AppKey("media_handoff", MediaHandoff)
