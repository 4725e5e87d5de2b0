-- wrk: POST a JSON order to the path given after `--`, every request with an
-- Idempotency-Key no run has used (a first attempt).
math.randomseed(os.time())
local prefix = string.format("%d-%d-", os.time(), math.random(1, 1000000000))
local n = 0
local path = "/"
function init(args) path = args[1] end
wrk.method = "POST"
wrk.body = '{"amount":1250,"currency":"EUR","order":"bench"}'
wrk.headers["Content-Type"] = "application/json"
function request()
  n = n + 1
  wrk.headers["Idempotency-Key"] = prefix .. n
  return wrk.format(nil, path)
end
