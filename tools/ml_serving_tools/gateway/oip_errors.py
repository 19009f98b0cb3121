"""The Open Inference Protocol's REST error shape at the front door.

The protocol's REST errors are `{"error": "<message>"}` (tritonclient reads that key); the
transcoder writes a google.rpc.Status as JSON (`{"code", "message", "details"}`). This Lua
filter, placed before the transcoder (so it sees the transcoded response), adds `"error"`
(the status's message, copied as already-escaped JSON text) to non-200 answers of requests
under /v2, keeping the rest of the body for clients that want the ErrorInfo. Only error
bodies are read; successful answers pass untouched.
"""

from __future__ import annotations

from .common import typed

OIP_ERROR_FILTER = "mesh.oip_error_shape"

OIP_ERROR_LUA = """
-- The Open Inference Protocol's error shape (ml_serving_tools.gateway.oip_errors).
local function under_v2(path)
  return path == "/v2" or path:sub(1, 4) == "/v2/" or path:sub(1, 4) == "/v2?"
end

-- The JSON string value of "message" in `text`, still escaped; nil if absent.
local function message_of(text)
  local start = text:find('"message":"', 1, true)
  if start == nil then return nil end
  local i = start + #'"message":"'
  local from = i
  while i <= #text do
    local c = text:sub(i, i)
    if c == "\\\\" then
      i = i + 2
    elseif c == '"' then
      return text:sub(from, i - 1)
    else
      i = i + 1
    end
  end
  return nil
end

function envoy_on_request(handle)
  if under_v2(handle:headers():get(":path") or "") then
    handle:streamInfo():dynamicMetadata():set("mnbara.oip", "rest", "1")
  end
end

function envoy_on_response(handle)
  local status = handle:headers():get(":status")
  if status == nil or status == "200" then return end
  local meta = handle:streamInfo():dynamicMetadata():get("mnbara.oip")
  if meta == nil or meta["rest"] ~= "1" then return end
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  local text = body:getBytes(0, body:length())
  if text:sub(1, 1) ~= "{" then
    return
  end
  local message = message_of(text) or "error"
  local shaped = '{"error":"' .. message .. '"' .. (text == "{}" and "}" or "," .. text:sub(2))
  body:setBytes(shaped)
  handle:headers():replace("content-length", tostring(#shaped))
end
"""


def oip_error_filter() -> dict:
    return {"name": OIP_ERROR_FILTER, "typed_config": typed(
        "filters.http.lua.v3.Lua", default_source_code={"inline_string": OIP_ERROR_LUA}, stat_prefix="oip_errors")}
