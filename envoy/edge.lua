-- The edge's response shaping for transcoded REST responses (never native gRPC).
--  * `x-http-code` (initial metadata from a service) sets a non-200 success status.
--  * A transcoded gRPC error {"code": <int>, ...} becomes the platform's error model
--    {"code": "<string>", "message", "details"}: the string code is the service's
--    `x-error-code` (its ErrorInfo reason), else derived from the gRPC code, and
--    the HTTP status follows from the string code.
-- Headers are changed before body() is called, as Envoy requires.

local GRPC_TO_CODE = {
  [1] = "cancelled", [2] = "internal", [3] = "invalid_argument", [4] = "deadline_exceeded",
  [5] = "not_found", [6] = "conflict", [7] = "permission_denied", [8] = "rate_limited",
  [9] = "precondition_failed", [10] = "conflict", [11] = "invalid_argument",
  [12] = "unimplemented", [13] = "internal", [14] = "unavailable", [15] = "internal",
  [16] = "unauthenticated",
}

local CODE_TO_HTTP = {
  invalid_argument = "400", unauthenticated = "401", permission_denied = "403",
  not_found = "404", conflict = "409", precondition_failed = "412",
  payload_too_large = "413", precondition_required = "428", rate_limited = "429",
  cancelled = "499", internal = "500", unimplemented = "501", unavailable = "503",
  deadline_exceeded = "504",
}

function envoy_on_response(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if string.find(content_type, "application/grpc", 1, true) == 1 then
    return
  end
  -- gRPC framing headers mean nothing to REST clients.
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")
  local success = headers:get("x-http-code")
  if success ~= nil then
    headers:remove("x-http-code")
    if headers:get(":status") == "200" and string.match(success, "^2%d%d$") then
      headers:replace(":status", success)
    end
    return
  end
  local status = tonumber(headers:get(":status")) or 0
  if status < 400 or string.find(content_type, "application/json", 1, true) == nil then
    return
  end
  local code = headers:get("x-error-code")
  if code ~= nil then
    headers:remove("x-error-code")
    if CODE_TO_HTTP[code] ~= nil then
      headers:replace(":status", CODE_TO_HTTP[code])
    end
  end
  local body = handle:body()
  if body == nil then
    return
  end
  local text = body:getBytes(0, body:length())
  local number = string.match(text, '^{"code":(%d+)')
  if number == nil then
    return -- already in the error model (a local reply) or not an error document
  end
  if code == nil then
    code = GRPC_TO_CODE[tonumber(number)] or "internal"
  end
  local rewritten = string.gsub(text, '^{"code":%d+', '{"code":"' .. code .. '"', 1)
  body:setBytes(rewritten)
end
