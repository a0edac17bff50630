-- wrk script for bench/load.sh: every request carries the bearer token given after "--".
--   wrk -s bench/load/auth.lua URL -- TOKEN
-- Non-2xx answers are counted by wrk itself ("Non-2xx or 3xx responses"); load.sh fails on any.

function init(args)
  if args[1] == nil or args[1] == "" then
    error("auth.lua: pass the bearer token after --")
  end
  wrk.headers["Authorization"] = "Bearer " .. args[1]
end
