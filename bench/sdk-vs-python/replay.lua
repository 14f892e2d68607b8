-- wrk script: replays kinde-sdk's create call byte for byte (captured with
-- `socat -v` between create_throughput and `serve`), or the bench's own
-- single-record request, so that the server's cost of each difference can be
-- measured on its own (server CPU per request, or callgrind of `serve`):
--
--   AGS=agreement_…,agreement_… TOKEN=… MODE=sdk \
--       wrk -t1 -c64 -d5s -s bench/sdk-vs-python/replay.lua http://127.0.0.1:8080
--
-- MODE:
--   bench        Authorization, Content-Type, the body (what `kinde-meter bench
--                --mode single` sends)
--   bench_key    bench + a random 128-bit Idempotency-Key
--   sdk_nokey    bench + the SDK's Accept, User-Agent and Kinde-SDK headers
--   sdk          sdk_nokey + a random 128-bit Idempotency-Key (kinde-sdk
--                before its keys were time-ordered)
--   sdk_ordered  sdk_nokey + a time-ordered key (48-bit milliseconds, then
--                random bits: kinde-sdk's IdempotencyKey::generate)
-- The body is the SDK's (value 1, delta), round-robin over AGS.
local ags = {}
for a in string.gmatch(os.getenv("AGS"), "[^,]+") do table.insert(ags, a) end
local mode = os.getenv("MODE") or "sdk"
local token = os.getenv("TOKEN")
local n = 0
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))

local function hex16() return string.format("%04x", math.random(0, 65535)) end

request = function()
  n = n + 1
  local body = '{"customer_agreement_id":"' .. ags[(n % #ags) + 1]
    .. '","billing_feature_code":"api_calls","meter_value":"1","meter_type_code":"delta"}'
  local headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
  if mode == "sdk" or mode == "sdk_nokey" or mode == "sdk_ordered" then
    headers["Accept"] = "application/json"
    headers["User-Agent"] = "kinde-sdk-rust/0.1.0"
    headers["Kinde-SDK"] = "Rust/0.1.0"
  end
  if mode == "sdk" or mode == "bench_key" then
    headers["Idempotency-Key"] = hex16() .. hex16() .. hex16() .. hex16()
      .. hex16() .. hex16() .. hex16() .. hex16()
  elseif mode == "sdk_ordered" then
    -- wrk's clock has second resolution: seconds × 10^5 + the request number
    -- (48 bits) keeps the keys ascending, like the SDK's milliseconds.
    headers["Idempotency-Key"] = string.format("%012x", os.time() * 100000 + n)
      .. hex16() .. hex16() .. hex16() .. hex16() .. hex16()
  end
  return wrk.format("POST", "/api/v1/billing/meter_usage", headers, body)
end
