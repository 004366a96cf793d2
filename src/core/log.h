/* Logging to stderr with levels. SDC_LOG=debug|info|warn|error or
 * sdc_log_set_level() picks how much is printed; default is info. */
#ifndef SDC_CORE_LOG_H
#define SDC_CORE_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SDC_LOG_DEBUG = 0, SDC_LOG_INFO, SDC_LOG_WARN, SDC_LOG_ERROR, SDC_LOG_QUIET } sdc_log_level;

void sdc_log_set_level(sdc_log_level level);
sdc_log_level sdc_log_get_level(void);
/* Reads SDC_LOG from the environment; unknown values are ignored. */
void sdc_log_init_from_env(void);
void sdc_log(sdc_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define SDC_DEBUG(...) sdc_log(SDC_LOG_DEBUG, __VA_ARGS__)
#define SDC_INFO(...) sdc_log(SDC_LOG_INFO, __VA_ARGS__)
#define SDC_WARN(...) sdc_log(SDC_LOG_WARN, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
