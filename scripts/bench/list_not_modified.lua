-- GET /api/tasks?sort_by=created_at&sort_order=desc with If-None-Match: $ETAG (the list's current
-- tag, so every answer is a 304). Loads the harness's common.lua for its RESULT line.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local req
function init(args)
  req = wrk.format("GET", "/api/tasks?sort_by=created_at&sort_order=desc", { ["If-None-Match"] = os.getenv("ETAG") })
end
function request() return req end
