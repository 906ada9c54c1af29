-- test_reporting.lua — listeners that fail or yield, and coroutines that fail after
-- ProfileService.Update resumed them, are reported on stderr and the service carries
-- on; the default store comes from PROFILESERVICE_STORE. Runs itself as a child
-- process to read its stderr. `lua5.4 test_reporting.lua URL`.
local T = require("helper")

if arg[2] == "child" then
    -- No Configure{store = …}: the store is PROFILESERVICE_STORE's.
    local ProfileService = require("profileservice")
    ProfileService.Configure{clock = "virtual", place_id = 1, job_id = "job-child"}
    ProfileService.IssueSignal:Connect(function() error("issue listener failure") end)
    ProfileService.IssueSignal:Connect(function() coroutine.yield() end)
    ProfileService.IssueSignal:Connect(function() ProfileService.Update() end)
    local issues = 0
    ProfileService.IssueSignal:Connect(function() issues = issues + 1 end)
    local store = ProfileService.GetProfileStore(T.name("Reporting"), {Coins = 0})
    local profile = store:LoadProfileAsync("k")
    profile:ListenToRelease(function() error("release listener failure") end)
    local after_release = false
    profile:ListenToRelease(function() after_release = true end)
    profile.Data.F = print
    while issues == 0 do
        ProfileService.Update()
        ProfileService.AdvanceClock(1)
    end
    profile.Data.F = nil
    local resumed = false
    coroutine.wrap(function()
        local p = store:LoadProfileAsync("other")
        resumed = true
        error("coroutine failure after loading " .. tostring(p ~= nil))
    end)()
    local deadline = os.time() + 20
    while not resumed and os.time() < deadline do ProfileService.Update() end
    profile:Release()
    print("carried on", issues, after_release)
    ProfileService.Shutdown()
    os.exit(0)
end

local lua = arg[-1] or "lua5.4"
local store = T.backend == "sqlite" and T.url or "memory:"
local cmd = string.format("PS_LUA_CHILD=1 PROFILESERVICE_STORE='%s' '%s' '%s' '%s' child 2>&1",
                          store, lua, arg[0], T.url)
local child = assert(io.popen(cmd, "r"))
local out = child:read("a")
local ok = child:close()
T.ok(ok, "the child ended normally:\n" .. out)
local function has(text)
    T.ok(out:find(text, 1, true), "output has " .. string.format("%q", text) .. ":\n" .. out)
end
has("[ProfileService]: error in IssueSignal listener: ")
has("issue listener failure")
has("attempt to yield")
has("ProfileService.Update cannot be called from inside a listener")
has("[ProfileService]: error in ListenToRelease listener: ")
has("release listener failure")
has("[ProfileService]: error in a coroutine resumed by ProfileService.Update: ")
has("coroutine failure after loading true")
has("carried on\t1\ttrue")
T.ok(not io.open("profiles.db"), "PROFILESERVICE_STORE was used, not sqlite:profiles.db")
T.done()
