/* signal.c — connections stay allocated until their signal dies, so a handle can be
 * disconnected twice, or from inside the listener that is running (hiredis defers
 * frees under REDIS_IN_CALLBACK the same way). */
#include "signal.h"

#include "error.h"

#include <stdlib.h>

void ps__signal_init(ps_signal *signal)
{
    signal->head = NULL;
    signal->tail = &signal->head;
}

int ps__signal_connect(ps_connection **out, ps_signal *signal, ps_generic_fn fn,
                       void *userdata, void (*free_userdata)(void *userdata))
{
    if (!signal || !fn)
        return ps__error_set(PS_EINVAL, "listener function is NULL");
    ps_connection *c = calloc(1, sizeof *c);
    if (!c)
        return ps__error_oom();
    c->fn = fn;
    c->userdata = userdata;
    c->free_userdata = free_userdata;
    *signal->tail = c;
    signal->tail = &c->next;
    if (out)
        *out = c;
    return PS_OK;
}

void ps_connection_disconnect(ps_connection *connection)
{
    if (!connection || connection->dead)
        return;
    connection->dead = 1;
    if (connection->free_userdata)
        connection->free_userdata(connection->userdata);
}

void ps__signal_emit(ps_signal *signal, ps_signal_invoke_fn invoke, void *args)
{
    /* Remember the last listener now: ones connected during emission wait for the
     * next one, as Roblox's signals do. */
    ps_connection *last = NULL;
    for (ps_connection *c = signal->head; c; c = c->next)
        last = c;
    for (ps_connection *c = signal->head; c; c = c->next) {
        if (!c->dead)
            invoke(c, args);
        if (c == last)
            break;
    }
}

void ps__signal_dispose(ps_signal *signal)
{
    ps_connection *c = signal->head, *next;
    for (; c; c = next) {
        next = c->next;
        ps_connection_disconnect(c);
        free(c);
    }
    ps__signal_init(signal);
}
