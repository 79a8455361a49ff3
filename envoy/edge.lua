-- The edge's request checks (JSON bodies) and its response shaping for transcoded
-- REST responses (never native gRPC).
--  * `x-http-code` (initial metadata from a service) sets a non-200 success status.
--  * A transcoded gRPC error {"code": <int>, ...} becomes the platform's error model
--    {"code": "<string>", "message", "details"}: the string code is the service's
--    `x-error-code` (its ErrorInfo reason), else derived from the gRPC code, and
--    the HTTP status follows from the string code.
-- Headers are changed before body() is called, as Envoy requires.

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

function envoy_on_request(handle)
  if refuse_bad_json_body(handle) then
    return
  end
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
