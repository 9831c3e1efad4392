-- POST <token endpoint> grant_type=refresh_token, client_secret_basic, as the kit's
-- token_client_credentials.lua does for client_credentials: refresh rotation under the same
-- wrk load (-t2 -c16) as the other rows of the table. Each connection keeps one chain going:
-- a request presents a live refresh token, its answer's new refresh token goes back to the
-- thread's pool for the next request (RFC 6749 §6: each token is presented once).
-- Env: BASIC_AUTH = base64("client_id:client_secret"); TOKENS_FILE = a file of live refresh
-- tokens, one per line: each wrk run takes (and removes) one per connection and one per
-- thread, so the warm-up and the measured run start from chains of their own; REPORT_LUA = the
-- kit's report.lua (the RESULT line).
dofile(assert(os.getenv("REPORT_LUA"), "REPORT_LUA env var required"))
local basic = assert(os.getenv("BASIC_AUTH"), "BASIC_AUTH env var required")
local tokens_file = assert(os.getenv("TOKENS_FILE"), "TOKENS_FILE env var required")

-- Main state: hand each thread its share of the file's first tokens.
local taken = nil
local threads = 0
function setup(thread)
  if taken == nil then
    local lines = {}
    for line in io.lines(tokens_file) do
      if line ~= "" then table.insert(lines, line) end
    end
    -- One per connection, and one more per thread: wrk calls request() once in the first
    -- thread before the run, to check the script (that token is never sent).
    local wanted = tonumber(os.getenv("C") or "16") + tonumber(os.getenv("T") or "2")
    assert(#lines >= wanted, "TOKENS_FILE holds " .. #lines .. " tokens, " .. wanted .. " wanted")
    taken = {}
    for i = 1, wanted do taken[i] = lines[i] end
    local rest = io.open(tokens_file, "w")
    for i = wanted + 1, #lines do rest:write(lines[i], "\n") end
    rest:close()
  end
  local per_thread = math.floor(#taken / tonumber(os.getenv("T") or "2"))
  local mine = {}
  for i = threads * per_thread + 1, (threads + 1) * per_thread do
    table.insert(mine, taken[i])
  end
  thread:set("initial", table.concat(mine, ","))
  threads = threads + 1
end

-- Thread states: the pool of live tokens.
local pool = {}
function init(args)
  for token in string.gmatch(initial or "", "[^,]+") do table.insert(pool, token) end
end

local headers = {
  ["Authorization"] = "Basic " .. basic,
  ["Content-Type"] = "application/x-www-form-urlencoded",
  ["Accept"] = "application/json",
}

function request()
  -- No live token (a chain broke: its answer was an error, counted as non2xx): a request
  -- that can only fail, so the run is marked INVALID rather than quietly slower.
  local token = table.remove(pool) or "mar_broken"
  return wrk.format("POST", nil, headers, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  local next_token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if next_token then table.insert(pool, next_token) end
end
