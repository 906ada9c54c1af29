/* signal.h — listener lists behind ScriptSignal / ListenTo* (host thread only). */
#ifndef PS_SIGNAL_H
#define PS_SIGNAL_H

#include "profileservice.h"

typedef void (*ps_generic_fn)(void);

struct ps_connection {
    struct ps_connection *next;
    ps_generic_fn fn;
    void *userdata;
    void (*free_userdata)(void *userdata);
    int dead; /* disconnected: skipped by emit, freed with the signal */
};

typedef struct ps_signal {
    ps_connection *head;
    ps_connection **tail;
} ps_signal;

/** Calls one listener with the emission's arguments. */
typedef void (*ps_signal_invoke_fn)(ps_connection *connection, void *args);

void ps__signal_init(ps_signal *signal);
/** Adds a listener at the end. @return PS_OK; PS_EINVAL (NULL fn); PS_ENOMEM. */
int ps__signal_connect(ps_connection **out, ps_signal *signal, ps_generic_fn fn,
                       void *userdata, void (*free_userdata)(void *userdata));
/** Calls @p invoke for each live listener, in connection order. Listeners connected
 *  during the emission are not called by it; disconnected ones are skipped. */
void ps__signal_emit(ps_signal *signal, ps_signal_invoke_fn invoke, void *args);
/** The owner dies: runs free_userdata of the live listeners and frees everything. */
void ps__signal_dispose(ps_signal *signal);

#endif /* PS_SIGNAL_H */
