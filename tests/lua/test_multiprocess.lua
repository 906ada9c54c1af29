-- test_multiprocess.lua — two Lua processes contend for one profile through one store
-- (an SQLite file, or PostgreSQL), with each not_released_handler answer. The other
-- process is tests/lua/mp_child.lua; both use the real clock with short settings.
-- `lua5.4 test_multiprocess.lua URL` (not for memory:, which one process owns).
local T = require("helper")
if T.backend == "memory" then
    print("skipped: a memory store cannot be shared by two processes")
    os.exit(77)
end
local ProfileService = require("profileservice")
ProfileService.Configure{store = T.url, place_id = 1001, job_id = "job-parent",
                         auto_save_period = 0.3, load_repeat_delay = 0.05}
local name = T.name("Multi")
local store = ProfileService.GetProfileStore(name, {Coins = 0})

local lua = arg[-1] or "lua5.4"
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Starts a child holding `key`; returns once the store shows it as the owner (at once
-- for MODE "exit", which does not hold it).
local function start_child(key, mode)
    local cmd = string.format("PS_LUA_CHILD=1 %s %s %s %s %s %s", quote(lua),
                              quote(dir .. "/mp_child.lua"), quote(T.url), quote(name),
                              quote(key), mode)
    local child = assert(io.popen(cmd, "r"))
    if mode == "exit" then
        return child
    end
    local deadline = os.time() + 30
    repeat
        local v = store:ViewProfileAsync(key)
        local owner = v.MetaData and v.MetaData.ActiveSession
        if owner and owner[2] == "job-child-" .. key and v.Data.Coins == 42 then
            break
        end
        assert(os.time() < deadline, "the child never loaded " .. key)
        os.execute("sleep 0.02")
    until false
    return child
end

local function finish_child(child)
    local out = child:read("a")
    local ok = child:close()
    return out, ok
end

local function handler(answers, calls)
    return function(place_id, game_job_id)
        calls[#calls + 1] = {place_id, game_job_id}
        return answers[#calls] or answers[#answers]
    end
end

-- "Cancel" and "Repeat": the child keeps the profile.
local child = start_child("k1", "hold")
local calls = {}
T.eq(store:LoadProfileAsync("k1", handler({"Cancel"}, calls)), nil, "Cancel → nil")
T.ok(T.same(calls[1], {2002, "job-child-k1"}), "the handler names the child's session")
calls = {}
local t0 = os.clock()
T.eq(store:LoadProfileAsync("k1", handler({"Repeat", "Repeat", "Cancel"}, calls)), nil,
     "Repeat, Repeat, Cancel → nil")
T.eq(#calls, 3, "asked again after each Repeat")

-- "ForceLoad": the live child hands the profile over at its next auto-save.
calls = {}
local p = store:LoadProfileAsync("k1", handler({"ForceLoad"}, calls))
T.ok(p and p:IsActive(), "ForceLoad took it")
T.eq(#calls, 1, "asked once")
T.eq(p.Data.Coins, 42, "with the child's data")
T.eq(p.MetaData.SessionLoadCount, 2, "a new session")
local out, ok = finish_child(child)
T.ok(ok, "the child exited cleanly")
T.eq(out, "released 1001 job-parent\n", "the child's ListenToRelease named us")
p.Data.Coins = 43
p:Release()

-- "Steal": at once; the child notices at its next save.
child = start_child("k2", "hold")
p = store:LoadProfileAsync("k2", "Steal")
T.ok(p and p:IsActive(), "Steal took it")
T.eq(p.Data.Coins, 42, "with the child's data")
out, ok = finish_child(child)
T.ok(ok, "the child exited cleanly")
T.eq(out, "released 1001 job-parent\n", "the robbed child noticed")
p:Release()

-- A crashed owner: "ForceLoad" steals after force_load_max_steps retries.
child = start_child("k3", "crash")
out = finish_child(child)
T.eq(out, "crashing\n", "the child crashed")
calls = {}
local before = ProfileService.GetProfileStore(name, {Coins = 0}):ViewProfileAsync("k3")
T.ok(T.same(before.MetaData.ActiveSession, {2002, "job-child-k3"}), "a dead lock")
p = store:LoadProfileAsync("k3", handler({"ForceLoad"}, calls))
T.ok(p and p:IsActive(), "stolen from the crashed server")
T.eq(p.Data.Coins, 42, "with its last saved data")
p:Release()

-- A server whose script just ends: closing its Lua state saves and releases.
child = start_child("k4", "exit")
out, ok = finish_child(child)
T.ok(ok, "the child exited cleanly")
T.eq(out, "exiting\n", "the child ended its chunk")
local closed = store:ViewProfileAsync("k4")
T.eq(closed.MetaData.ActiveSession, nil, "released when its Lua state closed")
T.eq(closed.Data.Coins, 43, "with the Data it had at the end")

ProfileService.Shutdown()
local v = store:ViewProfileAsync("k1")
T.eq(v, nil, "ServiceLocked: views return nil")
print(string.format("cpu %.2f s", os.clock() - t0))
T.done()
