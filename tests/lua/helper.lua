-- helper.lua — shared by the Lua tests (run by CTest as `lua5.4 TEST.lua URL`):
-- the store URL under test, assertions, tick loops, and more ProfileService
-- instances in the same process (each one is another game server).
local T = {}

-- The URL: argv[1]; "env:NAME" reads it from the environment (exit 77: skipped).
local url = arg[1] or "memory:"
if url:sub(1, 4) == "env:" then
    local value = os.getenv(url:sub(5))
    if not value or value == "" then
        print("skipped: " .. url:sub(5) .. " is not set")
        os.exit(77)
    end
    url = value
end
math.randomseed(os.time(), tonumber(tostring({}):match("0x(%x+)"), 16) or 0)
local run_id = string.format("%d%04d", os.time() % 100000, math.random(0, 9999))
if url == "memory:" then
    -- A named memory store, so several instances in this process share it.
    url = "memory:lua-" .. run_id
elseif url:sub(1, 7) == "sqlite:" and not os.getenv("PS_LUA_CHILD") then
    for _, suffix in ipairs({"", "-wal", "-shm"}) do
        os.remove(url:sub(8) .. suffix)
    end
end
T.url = url
T.run_id = run_id
T.backend = url:match("^(%a+)")

-- A store name unique to this run (a PostgreSQL server may be shared).
function T.name(base)
    return base .. "-" .. run_id
end

-- ---- assertions -------------------------------------------------------------------

local function describe(v)
    if type(v) == "string" then
        return string.format("%q", v)
    end
    return tostring(v)
end

function T.eq(got, want, what)
    if got ~= want then
        error(string.format("%s: got %s, want %s", what or "value", describe(got),
                            describe(want)), 2)
    end
end

function T.ok(cond, what)
    if not cond then
        error("failed: " .. (what or "condition"), 2)
    end
    return cond
end

-- Calls fn and expects an error whose message contains `pattern` (plain text).
function T.raises(pattern, fn, ...)
    local ok, err = pcall(fn, ...)
    if ok then
        error("expected an error containing " .. describe(pattern), 2)
    end
    err = tostring(err)
    if not err:find(pattern, 1, true) then
        error(string.format("error %s does not contain %s", describe(err),
                            describe(pattern)), 2)
    end
    return err
end

-- Deep equality of plain tables.
function T.same(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then
        return a == b and math.type(a) == math.type(b)
    end
    for k, v in pairs(a) do
        if not T.same(v, b[k]) then return false end
    end
    for k in pairs(b) do
        if a[k] == nil then return false end
    end
    return true
end

-- ---- instances and time -------------------------------------------------------------

-- The module path, for package.loadlib: every luaopen_profileservice call makes an
-- independent ProfileService (its own service, session tag and settings).
local module_path = assert(package.searchpath("profileservice", package.cpath))
T.instances = {}

-- A virtual clock shared by every instance made with T.server(): a Lua function,
-- with the sleep function blocking calls use to let virtual time pass.
T.now = os.time() + 0.0
local function clock() return T.now end
local function sleep(seconds) T.now = T.now + seconds end

-- Configures an instance (the required module when `ps` is given) on the URL under
-- test with the shared virtual clock.
function T.server(settings, ps)
    ps = ps or assert(package.loadlib(module_path, "luaopen_profileservice"))()
    local config = {store = T.url, clock = clock, sleep = sleep}
    for k, v in pairs(settings or {}) do config[k] = v end
    ps.Configure(config)
    T.instances[#T.instances + 1] = ps
    return ps
end

-- One tick of every instance, then virtual time moves on by `step` seconds. Backend
-- work runs on worker threads in real time: a tick that moves virtual time lasts
-- T.tick_cpu seconds of (CPU) time, ticking all along, so workers keep pace.
T.tick_cpu = 0.002
function T.tick(step)
    local start = os.clock()
    repeat
        for _, ps in ipairs(T.instances) do ps.Update() end
    until not step or step == 0 or os.clock() - start >= T.tick_cpu
    T.now = T.now + (step or 0)
end

-- Ticks (without moving time) until cond() is true: workers run in real time.
function T.spin_until(cond, what)
    local deadline = os.time() + 30
    while not cond() do
        T.tick(0)
        if os.time() > deadline then
            error("timed out waiting for " .. (what or "a condition"), 2)
        end
    end
end

-- Ticks with `step` seconds of virtual time until cond() or `max` ticks.
function T.run_until(cond, step, max, what)
    for _ = 1, max do
        if cond() then return true end
        T.tick(step)
    end
    if cond() then return true end
    error("never happened: " .. (what or "a condition"), 2)
end

-- Records the three service signals of an instance.
function T.record(ps)
    local rec = {issues = {}, corruptions = {}, critical = {}}
    ps.IssueSignal:Connect(function(message, store, key)
        rec.issues[#rec.issues + 1] = {message = message, store = store, key = key}
    end)
    ps.CorruptionSignal:Connect(function(store, key)
        rec.corruptions[#rec.corruptions + 1] = {store = store, key = key}
    end)
    ps.CriticalStateSignal:Connect(function(on)
        rec.critical[#rec.critical + 1] = on
    end)
    return rec
end

function T.done()
    print("ok")
end

return T
