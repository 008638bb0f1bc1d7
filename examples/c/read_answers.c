/* Reads every blip2caption answer riding on video buffers (the Blip2CaptionMeta) from C, with
 * two elements in series, and prints one line per answer:
 *   ELEMENT [PROMPT] PTS: TEXT
 *
 *   cc -o read_answers examples/c/read_answers.c $(pkg-config --cflags --libs gstreamer-1.0)
 *   GST_PLUGIN_PATH=$PWD/target/release ./read_answers MODEL
 */
#include <gst/gst.h>

static GstPadProbeReturn
print_answers (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  GstBuffer *buffer = GST_PAD_PROBE_INFO_BUFFER (info);
  GstCustomMeta *meta = gst_buffer_get_custom_meta (buffer, "Blip2CaptionMeta");
  if (meta != NULL) {
    const GValue *answers =
        gst_structure_get_value (gst_custom_meta_get_structure (meta), "answers");
    for (guint i = 0; i < gst_value_array_get_size (answers); i++) {
      const GstStructure *a =
          gst_value_get_structure (gst_value_array_get_value (answers, i));
      guint64 pts = 0;
      gst_structure_get_uint64 (a, "pts", &pts);
      g_print ("%s [%s] %" GST_TIME_FORMAT ": %s\n", gst_structure_get_string (a, "element"),
          gst_structure_get_string (a, "prompt"), GST_TIME_ARGS (pts),
          gst_structure_get_string (a, "text"));
    }
  }
  return GST_PAD_PROBE_OK;
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  if (argc != 2) {
    g_printerr ("usage: %s MODEL\n", argv[0]);
    return 2;
  }
  gchar *description = g_strdup_printf ("videotestsrc num-buffers=20 "
      "! video/x-raw,width=320,height=240,framerate=10/1 "
      "! blip2caption name=captioner model=\"%s\" mode=complete "
      "! blip2caption name=asker model=\"%s\" mode=complete "
      "prompt=\"Question: what colours are there? Answer:\" ! fakesink name=sink "
      "captioner.text_src ! fakesink asker.text_src ! fakesink", argv[1], argv[1]);
  GError *error = NULL;
  GstElement *pipeline = gst_parse_launch (description, &error);
  g_free (description);
  if (pipeline == NULL) {
    g_printerr ("%s\n", error->message);
    return 1;
  }
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  GstPad *pad = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, print_answers, NULL, NULL);
  gst_object_unref (pad);
  gst_object_unref (sink);

  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus (pipeline);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  int status = 0;
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    gst_message_parse_error (msg, &error, NULL);
    g_printerr ("error: %s\n", error->message);
    g_clear_error (&error);
    status = 1;
  }
  gst_message_unref (msg);
  gst_object_unref (bus);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (pipeline);
  return status;
}
