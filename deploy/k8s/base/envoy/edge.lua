-- The edge's request checks (JSON bodies) and its response shaping for transcoded
-- REST responses (never native gRPC).
--  * `x-http-code` (initial metadata from a service) sets a non-200 success status;
--    without it, a route's `success_status` metadata does (services/launcher/edge_routes.py),
--    so a method's common answer (202) costs its service no metadata operation. A
--    route's `success_headers` are added to a success that does not carry them (a
--    product read's `Cache-Status` of a hit: the gateway names only a miss or stale).
--  * A transcoded gRPC error {"code": <int>, ...} becomes the platform's error model
--    {"code": "<string>", "message", "details"}: the string code is the service's
--    `x-error-code` (its ErrorInfo reason), else derived from the gRPC code, and
--    the HTTP status follows from the string code.
--  * Envoy's own error replies never echo raw client bytes (printable_message).
-- Headers are changed before body() is called, as Envoy requires.
-- On the request side (request_headers) it drops or refuses what gRPC cannot carry.

-- JSON request bodies keep the platform's limits before the transcoder builds
-- protobuf from them (services/kit/jsonlimits.py holds the same rules for what
-- the services parse themselves): at most MAX_JSON_DEPTH levels of objects and
-- arrays, no key twice in one object, no null array element (the transcoder
-- would drop it silently). One pass over the already buffered body, jumping
-- from one structural character to the next with string.find; strings are
-- skipped whole. A refusal is a 400 local reply, which the local reply
-- mappers put in the error model.
local MAX_JSON_DEPTH = 32

local ESCAPED = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function utf8_char(code)
  if code < 0x80 then
    return string.char(code)
  elseif code < 0x800 then
    return string.char(0xC0 + math.floor(code / 0x40), 0x80 + code % 0x40)
  elseif code < 0x10000 then
    return string.char(0xE0 + math.floor(code / 0x1000), 0x80 + math.floor(code / 0x40) % 0x40,
                       0x80 + code % 0x40)
  end
  return string.char(0xF0 + math.floor(code / 0x40000), 0x80 + math.floor(code / 0x1000) % 0x40,
                     0x80 + math.floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
end

-- A key as parsers compare it: "a" and "\u0061" are the same key.
local function decoded_key(raw)
  if not string.find(raw, "\\", 1, true) then
    return raw
  end
  local out, i = {}, 1
  while true do
    local j = string.find(raw, "\\", i, true)
    if j == nil then
      out[#out + 1] = string.sub(raw, i)
      return table.concat(out)
    end
    out[#out + 1] = string.sub(raw, i, j - 1)
    local c = string.sub(raw, j + 1, j + 1)
    if c == "u" then
      local code = tonumber(string.sub(raw, j + 2, j + 5), 16) or 0
      i = j + 6
      if code >= 0xD800 and code < 0xDC00 and string.sub(raw, i, i + 1) == "\\u" then
        local low = tonumber(string.sub(raw, i + 2, i + 5), 16) or 0
        if low >= 0xDC00 and low < 0xE000 then
          code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
          i = i + 6
        end
      end
      out[#out + 1] = utf8_char(code)
    else
      out[#out + 1] = ESCAPED[c] or c
      i = j + 2
    end
  end
end

local QUOTE, BACKSLASH, COMMA = 34, 92, 44
local OPEN_OBJECT, CLOSE_OBJECT, OPEN_ARRAY, CLOSE_ARRAY = 123, 125, 91, 93

-- nil when `text` keeps the limits, else what is wrong. Malformed JSON is left
-- to the parser behind, which names the error. Bytes, not captures: no string
-- is made except for object keys.
local function json_body_problem(text)
  local depth, kinds, keys, last, i = 0, {}, {}, 0, 1
  while true do
    local s = string.find(text, '[{}%[%]",n]', i)
    if s == nil then
      return nil
    end
    local c = string.byte(text, s)
    i = s + 1
    if c == QUOTE then
      local e = s
      repeat
        e = string.find(text, '["\\]', e + 1)
        if e == nil then
          return nil
        end
        local backslash = string.byte(text, e) == BACKSLASH
        if backslash then
          e = e + 1
        end
      until not backslash
      if kinds[depth] == OPEN_OBJECT and (last == OPEN_OBJECT or last == COMMA) then
        local key = decoded_key(string.sub(text, s + 1, e - 1))
        if keys[depth][key] then
          if #key <= 64 and string.match(key, "^[%w_.-]+$") then
            return 'the JSON body repeats the key "' .. key .. '" in one object'
          end
          return "the JSON body repeats a key in one object"
        end
        keys[depth][key] = true
      end
      last, i = QUOTE, e + 1
    elseif c == OPEN_OBJECT or c == OPEN_ARRAY then
      depth = depth + 1
      if depth > MAX_JSON_DEPTH then
        return "the JSON body is nested more than " .. MAX_JSON_DEPTH .. " levels deep"
      end
      kinds[depth] = c
      if c == OPEN_OBJECT then
        keys[depth] = {}
      end
      last = c
    elseif c == CLOSE_OBJECT or c == CLOSE_ARRAY then
      depth = depth - 1
      last = c
    elseif c == COMMA then
      last = c
    elseif string.sub(text, s, s + 3) == "null" then
      if kinds[depth] == OPEN_ARRAY and (last == OPEN_ARRAY or last == COMMA) then
        return "the JSON body holds a null array element; leave the element out"
      end
      last = 0
    end
  end
end

-- Called from envoy_on_request for every request; true when it answered.
-- Native gRPC is not JSON; a body that does not start like a JSON document is
-- left to the parser behind.
local function refuse_bad_json_body(handle)
  local content_type = handle:headers():get("content-type") or ""
  if string.find(content_type, "application/grpc", 1, true) == 1 then
    return false
  end
  local body = handle:body()
  if body == nil or body:length() == 0 then
    return false
  end
  local text = body:getBytes(0, body:length())
  if not string.find(text, "^%s*[{%[]") then
    return false
  end
  local problem = json_body_problem(text)
  if problem == nil then
    return false
  end
  handle:respond({ [":status"] = "400", ["content-type"] = "text/plain" }, problem)
  return true
end


local GRPC_TO_CODE = {
  [1] = "cancelled", [2] = "internal", [3] = "invalid_argument", [4] = "deadline_exceeded",
  [5] = "not_found", [6] = "conflict", [7] = "permission_denied", [8] = "rate_limited",
  [9] = "precondition_failed", [10] = "conflict", [11] = "invalid_argument",
  [12] = "unimplemented", [13] = "internal", [14] = "unavailable", [15] = "internal",
  [16] = "unauthenticated",
}

local CODE_TO_HTTP = {
  invalid_argument = "400", unauthenticated = "401", permission_denied = "403",
  not_found = "404", conflict = "409", insufficient_stock = "409", precondition_failed = "412",
  payload_too_large = "413", precondition_required = "428", rate_limited = "429",
  cancelled = "499", internal = "500", unimplemented = "501", unavailable = "503",
  deadline_exceeded = "504",
}

-- Request headers (envoy_on_request), REST and native gRPC alike -------------------

-- Whether s is well-formed UTF-8 (only asked of values with a byte >= 0x80).
local function is_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local extra
    if c < 0x80 then extra = 0
    elseif c >= 0xC2 and c <= 0xDF then extra = 1
    elseif c >= 0xE0 and c <= 0xEF then extra = 2
    elseif c >= 0xF0 and c <= 0xF4 then extra = 3
    else return false end
    for k = i + 1, i + extra do
      local b = string.byte(s, k)
      if b == nil or b < 0x80 or b > 0xBF then return false end
    end
    i = i + extra + 1
  end
  return true
end

-- What gRPC cannot carry is settled before the transcoder:
--  * gRPC metadata names are [0-9a-z_.-]; HTTP also allows ! # $ % & ' * + ^ ` | ~,
--    which the services' gRPC core refuses (a 500). No service reads such a header:
--    it is dropped.
--  * A value that is not UTF-8 cannot become metadata either (the services would log
--    a traceback per layer): one 400 here instead.
--  * `bearer x` is `Bearer x`: RFC 7235 makes the scheme case-insensitive, and
--    jwt_authn matches its prefix exactly.
-- Returns false when it answered the request itself.
-- Seed 002's clients call the same API under /api/v1/: one prefix rewrite before the
-- transcoder, which then maps the path to its method as it would /v1/.
local SEED_PREFIX = "/api/v1/"

local function request_headers(handle)
  local headers = handle:headers()
  local path = headers:get(":path")
  if path ~= nil and string.sub(path, 1, #SEED_PREFIX) == SEED_PREFIX then
    headers:replace(":path", "/v1/" .. string.sub(path, #SEED_PREFIX + 1))
  end
  local foreign = nil
  for name, value in pairs(headers) do
    if string.byte(name, 1) ~= 58 and string.find(name, "[^%w_%.%-]") then
      foreign = foreign or {}
      foreign[#foreign + 1] = name
    elseif string.find(value, "[\128-\255]") and not is_utf8(value) then
      handle:respond({[":status"] = "400"}, "a request header value is not valid UTF-8")
      return false
    end
  end
  if foreign ~= nil then
    for _, name in ipairs(foreign) do
      headers:remove(name)
    end
  end
  local authorization = headers:get("authorization")
  if authorization ~= nil then
    local scheme, credentials = string.match(authorization, "^(%a+) +(.*)$")
    if scheme ~= nil and string.lower(scheme) == "bearer" then
      local canonical = "Bearer " .. credentials
      if canonical ~= authorization then
        headers:replace("authorization", canonical)
      end
    end
  end
  return true
end

-- Headers first: body() waits for the whole body, and a request refused for its
-- headers needs none of it.
function envoy_on_request(handle)
  if request_headers(handle) then
    refuse_bad_json_body(handle)
  end
end

-- Envoy's own error replies quote the request (the transcoder's parse errors print
-- the body around the error). printable_message keeps the message's first line, at
-- most MESSAGE_LIMIT bytes, with every JSON escape but \" and \\ and every byte
-- outside printable ASCII as "?". The error model's keys are sorted (code, details,
-- message), so the message is the last string.
local MESSAGE_LIMIT = 200

local function printable_message(text)
  local head, message, tail = string.match(text, '^(.-"message":")(.*)("}%s*)$')
  if head == nil then
    return text
  end
  local out, length, i, n = {}, 0, 1, #message
  while i <= n and length < MESSAGE_LIMIT do
    local c = string.byte(message, i)
    local piece, step = nil, 1
    if c == 92 then -- a backslash: one JSON escape
      local e = string.sub(message, i + 1, i + 1)
      if e == "n" or e == "r" then
        break
      end
      piece = (e == '"' or e == "\\") and ("\\" .. e) or "?"
      step = (e == "u") and 6 or 2
    elseif c >= 32 and c < 127 then
      piece = string.char(c)
    elseif c < 0x80 or c >= 0xC0 then
      piece = "?" -- a control byte, or the first byte of a UTF-8 sequence
    end -- continuation bytes go with their first byte's "?"
    if piece ~= nil then
      out[#out + 1] = piece
      length = length + #piece
    end
    i = i + step
  end
  local clean = table.concat(out)
  if clean == "" then
    clean = "the request was refused"
  end
  return head .. clean .. tail
end

-- jwt_authn answers an authentic token for another audience 403, with the challenge
-- error="invalid_token" it puts on its 401s; RFC 6750 3.1 makes every invalid token a
-- 401. RBAC's 403 (a valid token, the wrong role) carries no challenge and stays.
local function refused_token(headers)
  local challenge = headers:get("www-authenticate")
  return challenge ~= nil and string.find(challenge, 'error="invalid_token"', 1, true) ~= nil
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if string.find(content_type, "application/grpc", 1, true) == 1 then
    if headers:get("grpc-status") == "7" and refused_token(headers) then
      headers:replace("grpc-status", "16") -- UNAUTHENTICATED
    end
    return
  end
  -- gRPC framing headers mean nothing to REST clients.
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")
  local success = headers:get("x-http-code")
  if success ~= nil then
    headers:remove("x-http-code")
  end
  if headers:get(":status") == "200" then
    local route = handle:metadata()
    if success ~= nil and string.match(success, "^2%d%d$") then
      headers:replace(":status", success)
    else
      local route_success = route:get("success_status")
      if route_success ~= nil then
        headers:replace(":status", route_success)
      end
    end
    local defaults = route:get("success_headers")
    if defaults ~= nil then
      for name, value in pairs(defaults) do
        if headers:get(name) == nil then
          headers:add(name, value)
        end
      end
    end
    return
  end
  if success ~= nil then
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
  local token = headers:get(":status") == "403" and refused_token(headers)
  if token then
    headers:replace(":status", "401")
  end
  local body = handle:body()
  if body == nil then
    return
  end
  local text = body:getBytes(0, body:length())
  local number = string.match(text, '^{"code":(%d+)')
  if number == nil then
    -- Already in the error model (a local reply) or not an error document.
    local clean = printable_message(text)
    if token then
      clean = string.gsub(clean, '^{"code":"permission_denied"', '{"code":"unauthenticated"', 1)
    end
    if clean ~= text then
      body:setBytes(clean)
    end
    return
  end
  if code == nil then
    code = GRPC_TO_CODE[tonumber(number)] or "internal"
  end
  local rewritten = string.gsub(text, '^{"code":%d+', '{"code":"' .. code .. '"', 1)
  body:setBytes(rewritten)
end
