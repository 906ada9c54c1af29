/*
 * profile_example — the smallest complete use of the library: open the default
 * SQLite store (profiles.db), load a player's profile, change its Data, set a meta
 * tag, release it, then view what the store now holds.
 *
 *   ./profile_example [STORE_URL] [PLAYER_KEY]
 */
#include <profileservice.h>

#include <stdio.h>
#include <stdlib.h>

static void on_issue(const char *message, const char *store, const char *key, void *ud)
{
    (void)ud;
    fprintf(stderr, "issue: %s (store %s, key %s)\n", message, store ? store : "-",
            key ? key : "-");
}

static int fail(const char *what)
{
    fprintf(stderr, "%s: %s (%s)\n", what, ps_error_last()->message,
            ps_status_name(ps_error_last()->code));
    return 1;
}

static int play(ps_profile_store *store, const char *key)
{
    ps_profile *profile = NULL;
    if (ps_store_load_profile(&profile, store, key, NULL, NULL) != PS_OK)
        return fail("load");
    json_t *data = ps_profile_data(profile);
    json_int_t coins = json_integer_value(json_object_get(data, "Coins"));
    printf("loaded %s: Coins=%lld SessionLoadCount=%lld\n", key, (long long)coins,
           (long long)ps_profile_session_load_count(profile));
    json_object_set_new(data, "Coins", json_integer(coins + 10));
    json_array_append_new(json_object_get(data, "Items"), json_string("potion"));
    ps_profile_set_meta_tag_new(profile, "LastExample", json_string("played"));
    printf("changed Data: Coins %lld -> %lld, added a potion\n", (long long)coins,
           (long long)coins + 10);
    ps_profile_release(profile);
    printf("released %s (active: %s)\n", key, ps_profile_is_active(profile) ? "yes" : "no");
    ps_profile_free(profile);
    return 0;
}

static int show(ps_profile_store *store, const char *key)
{
    ps_profile *view = NULL;
    if (ps_store_view_profile(&view, store, key) != PS_OK)
        return fail("view");
    char *text = json_dumps(ps_profile_data(view), JSON_COMPACT | JSON_SORT_KEYS);
    printf("stored Data now: %s (owner: %s)\n", text ? text : "null",
           ps_profile_active_session(view, NULL, NULL) ? "a server" : "none");
    free(text);
    ps_profile_free(view);
    return 0;
}

int main(int argc, char **argv)
{
    ps_config config;
    ps_config_init(&config);
    config.store_url = argc > 1 ? argv[1] : "sqlite:profiles.db";
    const char *key = argc > 2 ? argv[2] : "Player_2261";

    ps_service *service = NULL;
    if (ps_service_new(&service, &config) != PS_OK)
        return fail("open store");
    ps_service_issue_signal_connect(NULL, service, on_issue, NULL, NULL);
    json_t *template_ = json_pack("{s:i, s:[s], s:{s:b}}", "Coins", 0, "Items", "sword",
                                  "Settings", "Music", 1);
    ps_profile_store *store = NULL;
    int rc = ps_service_get_profile_store(&store, service, "PlayerData", template_);
    json_decref(template_);
    if (rc != PS_OK)
        return fail("profile store");
    printf("store %s, session [%lld, \"%s\"]\n", config.store_url,
           (long long)ps_service_place_id(service), ps_service_job_id(service));
    rc = play(store, key);
    if (rc == 0) /* this view is queued after the release save of the same key */
        rc = show(store, key);
    ps_service_shutdown(service);
    ps_service_free(service);
    return rc;
}
