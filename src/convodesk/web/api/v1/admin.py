"""Admin JSON API: messaging services, queues, agents and chat settings.

Bodies have the config-file shape (docs/reference/configuration.md) and go through the same
configurator; answers mask secrets as ``********``, and sending the mask back keeps the
stored secret. Resources are addressed by name (agents by login). A messaging service
carries its approved WhatsApp templates (`whatsapp_templates`) as part of its body.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from convodesk.services import configuration
from convodesk.services.configuration import Section
from convodesk.web.auth import AdminDep, RuntimeDep

router = APIRouter(prefix="/api/v1", tags=["admin"])

ObjectBody = Body(..., description="the resource, in the config-file shape")


def _changed(request: Request) -> None:
    """The hot paths read the configuration through a cache: drop it after a change."""
    request.app.state.directory.invalidate()


def _crud(section: Section, path: str, key_name: str, title: str) -> None:
    KeyPath = Path(..., alias=key_name)  # noqa: N806 - a parameter default, read as a type

    @router.get(f"/{path}", summary=f"List {title}s", name=f"list_{section}")
    async def list_items(runtime: RuntimeDep, _admin: AdminDep) -> list[dict[str, Any]]:
        return await run_in_threadpool(configuration.list_resources, runtime, section)

    @router.post(f"/{path}", status_code=201, summary=f"Create a {title}", name=f"create_{section}")
    async def create_item(
        request: Request, runtime: RuntimeDep, _admin: AdminDep, body: dict[str, Any] = ObjectBody
    ) -> dict[str, Any]:
        created = await run_in_threadpool(configuration.create_resource, runtime, section, body)
        _changed(request)
        return created

    @router.get(f"/{path}/{{{key_name}}}", summary=f"Get a {title}", name=f"get_{section}")
    async def get_item(runtime: RuntimeDep, _admin: AdminDep, key: str = KeyPath) -> dict[str, Any]:
        return await run_in_threadpool(configuration.get_resource, runtime, section, key)

    @router.put(f"/{path}/{{{key_name}}}", summary=f"Replace a {title}", name=f"replace_{section}")
    async def replace_item(
        request: Request,
        runtime: RuntimeDep,
        _admin: AdminDep,
        body: dict[str, Any] = ObjectBody,
        key: str = KeyPath,
    ) -> dict[str, Any]:
        replaced = await run_in_threadpool(
            configuration.replace_resource, runtime, section, key, body
        )
        _changed(request)
        return replaced

    @router.delete(
        f"/{path}/{{{key_name}}}",
        status_code=204,
        summary=f"Delete a {title}",
        name=f"delete_{section}",
    )
    async def delete_item(
        request: Request, runtime: RuntimeDep, _admin: AdminDep, key: str = KeyPath
    ) -> Response:
        await run_in_threadpool(configuration.delete_resource, runtime, section, key)
        _changed(request)
        return Response(status_code=204)


_crud("messaging_services", "messaging-services", "name", "messaging service")
_crud("queues", "queues", "name", "queue")
_crud("agents", "agents", "login", "agent")


@router.get("/chat-settings", summary="Get the chat settings")
async def get_chat_settings(runtime: RuntimeDep, _admin: AdminDep) -> dict[str, Any]:
    return await run_in_threadpool(configuration.get_chat_settings, runtime)


@router.put("/chat-settings", summary="Replace the chat settings")
async def replace_chat_settings(
    request: Request, runtime: RuntimeDep, _admin: AdminDep, body: dict[str, Any] = ObjectBody
) -> dict[str, Any]:
    replaced = await run_in_threadpool(configuration.replace_chat_settings, runtime, body)
    _changed(request)
    return replaced
