/* The public headers compile alone, as C++ with -pedantic (libgit2 tests/headertest). */
#include <profileservice.h>
#include <profileservice/backend.h>

int main(void)
{
    ps_config config;
    ps_config_init(&config);
    return ps_status_name(PS_OK)[0] == 'P' ? 0 : 1;
}
