/* PyTorch checkpoints as torch.save writes them since 1.6 (.ckpt, .pt, .pth,
 * .bin): a zip holding <archive>/data.pkl, the tensors' storages as
 * <archive>/data/<key>, and <archive>/byteorder. Read without executing
 * anything: data.pkl goes through the restricted unpickler (io/pickle.h), so
 * a file that asks for any code (os.system, eval, ...) is refused with
 * SDC_EUNSAFE and nothing it names is ever run.
 *
 * Contiguous tensors point into the mapped file; strided views (a transposed
 * tensor) and tensors of DEFLATE-compressed entries are copied into buffers
 * owned by the weights set. */
#ifndef SDC_IO_CKPT_H
#define SDC_IO_CKPT_H

#include "io/weights.h"

/* Dicts nested deeper than this are refused (SD state dicts are flat). */
#define SDC_CKPT_MAX_DEPTH 64
/* Longest dotted tensor name. */
#define SDC_CKPT_MAX_NAME 4096
/* Dict entries visited while collecting tensors (shared sub-dicts could
 * otherwise make the walk exponential). */
#define SDC_CKPT_MAX_VISITS (4u << 20)
/* A view that repeats storage elements (stride 0, overlaps) may need more
 * bytes than its storage; it is materialised only up to this size. */
#define SDC_CKPT_MAX_EXPAND (64ull << 20)

/* Reads every tensor of the checkpoint at path into w, named by its dotted
 * key as stored (name == src_name). A top-level {"state_dict": {...}, ...}
 * (CompVis / Lightning) is descended into and its siblings (global_step,
 * optimizer states, callbacks, ...) are ignored; nested dicts become dotted
 * names; other non-tensor values, and entries keyed by an inert object
 * (io/pickle.h: a Lightning callback class), are skipped. The file is recorded with
 * sdc_weights_map_file; weights copied out of it have file == -1. */
sdc_status sdc_ckpt_read(const char *path, sdc_weights *w, sdc_error *err);

#endif
