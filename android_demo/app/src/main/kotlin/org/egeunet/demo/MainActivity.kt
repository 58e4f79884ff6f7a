package org.egeunet.demo

import android.app.Activity
import android.content.ActivityNotFoundException
import android.content.Intent
import android.net.Uri
import android.os.Bundle
import android.provider.MediaStore
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.RadioButton
import android.widget.RadioGroup
import android.widget.SeekBar
import android.widget.TextView
import androidx.core.content.FileProvider
import java.io.File
import java.io.IOException
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import java.util.concurrent.atomic.AtomicBoolean
import org.egeunet.core.BenchmarkRunner
import org.egeunet.core.ModelInput
import org.egeunet.core.ModelMetadata
import org.egeunet.core.RgbImage
import org.egeunet.core.Segmenter

/**
 * The one screen: pick or take a photo, see the lesion mask over it with its area and the inference time, choose
 * CPU threads / GPU / NNAPI, and benchmark N inferences (p50/p90 and what actually ran).
 *
 * All model work runs on one background thread (the interpreter is not thread-safe); the UI thread only shows
 * results. The logic lives in the tested core (`org.egeunet.core`); this class wires it to Android.
 */
class MainActivity : Activity() {
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    private val cancelBenchmark = AtomicBoolean(false)

    // owned by the worker thread
    private var model: ByteArray? = null
    private var segmenter: Segmenter? = null
    private var engine: LiteRtEngine? = null
    private var lastInput: ModelInput? = null

    private var captureUri: Uri? = null
    private lateinit var image: ImageView
    private lateinit var result: TextView
    private lateinit var status: TextView
    private lateinit var modelInfo: TextView
    private lateinit var benchmarkResult: TextView
    private lateinit var accelerators: RadioGroup
    private lateinit var threadsBar: SeekBar
    private lateinit var threadsLabel: TextView
    private lateinit var runsField: EditText
    private lateinit var benchmarkButton: Button

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        image = findViewById(R.id.image)
        result = findViewById(R.id.result)
        status = findViewById(R.id.status)
        modelInfo = findViewById(R.id.model_info)
        benchmarkResult = findViewById(R.id.benchmark_result)
        accelerators = findViewById(R.id.accelerators)
        threadsBar = findViewById(R.id.threads)
        threadsLabel = findViewById(R.id.threads_label)
        runsField = findViewById(R.id.benchmark_runs)
        benchmarkButton = findViewById(R.id.benchmark)

        findViewById<Button>(R.id.pick).setOnClickListener { pickPhoto() }
        findViewById<Button>(R.id.camera).setOnClickListener { takePhoto() }
        benchmarkButton.setOnClickListener { benchmark() }
        findViewById<RadioButton>(R.id.accel_gpu).isEnabled = Accelerator.gpuAvailable()
        findViewById<RadioButton>(R.id.accel_nnapi).isEnabled = Accelerator.nnapiAvailable()
        accelerators.setOnCheckedChangeListener { _, _ -> configureEngine() }
        threadsBar.setOnSeekBarChangeListener(
            object : SeekBar.OnSeekBarChangeListener {
                override fun onProgressChanged(bar: SeekBar, progress: Int, fromUser: Boolean) {
                    threadsLabel.text = getString(R.string.threads_label, threads())
                }

                override fun onStartTrackingTouch(bar: SeekBar) {}

                override fun onStopTrackingTouch(bar: SeekBar) = configureEngine()
            },
        )
        threadsLabel.text = getString(R.string.threads_label, threads())
        worker.execute { loadModel() }
    }

    override fun onDestroy() {
        cancelBenchmark.set(true)
        worker.execute { engine?.close() }
        worker.shutdown()
        super.onDestroy()
    }

    private fun threads() = threadsBar.progress + 1

    private fun accelerator(): Accelerator = when (accelerators.checkedRadioButtonId) {
        R.id.accel_gpu -> Accelerator.GPU
        R.id.accel_nnapi -> Accelerator.NNAPI
        else -> Accelerator.CPU
    }

    private fun ui(block: () -> Unit) = runOnUiThread { block() }

    private fun showStatus(text: String) = ui { status.text = text }

    // --- model -------------------------------------------------------------------------------------------------

    private fun loadModel() {
        try {
            val bytes = assets.open(MODEL_ASSET).use { it.readBytes() }
            val meta = ModelMetadata.forModel(bytes, MODEL_ASSET, CONTRACT_ASSET) { readAsset(CONTRACT_ASSET) }
            model = bytes
            segmenter = Segmenter(meta)
            val graph = getString(if (meta.preprocessingInGraph) R.string.graph_baked else R.string.graph_raw)
            ui {
                modelInfo.text =
                    getString(
                        R.string.model_info,
                        meta.modelVersion,
                        meta.format,
                        meta.precision,
                        "${meta.input.dtype} ${meta.input.layout} ${meta.input.shape}",
                        graph,
                        meta.contractSha256.take(12),
                    )
            }
        } catch (e: IOException) {
            showStatus(getString(R.string.no_model, MODEL_ASSET))
            return
        } catch (e: IllegalArgumentException) {
            showStatus(getString(R.string.bad_model, e.message))
            return
        }
        buildEngine(accelerator(), threads())
    }

    private fun readAsset(name: String): String? = try {
        assets.open(name).use { String(it.readBytes(), Charsets.UTF_8) }
    } catch (e: IOException) {
        null
    }

    private fun configureEngine() {
        val accel = accelerator()
        val n = threads()
        cancelBenchmark.set(true)
        worker.execute { buildEngine(accel, n) }
    }

    /** Runs on the worker. A delegate that fails to initialise falls back to the CPU and says so. */
    private fun buildEngine(accel: Accelerator, threads: Int) {
        val bytes = model ?: return
        val meta = segmenter?.metadata ?: return
        engine?.close()
        engine = null
        engine =
            try {
                LiteRtEngine(bytes, meta, accel, threads)
            } catch (e: Exception) {
                showStatus(getString(R.string.delegate_failed, accel.label, e.message))
                if (accel == Accelerator.CPU) return
                LiteRtEngine(bytes, meta, Accelerator.CPU, threads)
            }
        showStatus(getString(R.string.engine_ready, engine!!.description))
    }

    // --- photos ------------------------------------------------------------------------------------------------

    private fun pickPhoto() {
        val intent = Intent(Intent.ACTION_GET_CONTENT)
        intent.type = "image/*"
        intent.addCategory(Intent.CATEGORY_OPENABLE)
        startForResult(intent, REQUEST_PICK)
    }

    private fun takePhoto() {
        val dir = File(cacheDir, "photos")
        dir.mkdirs()
        val uri = FileProvider.getUriForFile(this, "$packageName.photos", File(dir, "capture.jpg"))
        captureUri = uri
        val intent = Intent(MediaStore.ACTION_IMAGE_CAPTURE)
        intent.putExtra(MediaStore.EXTRA_OUTPUT, uri)
        intent.addFlags(Intent.FLAG_GRANT_WRITE_URI_PERMISSION or Intent.FLAG_GRANT_READ_URI_PERMISSION)
        startForResult(intent, REQUEST_CAPTURE)
    }

    private fun startForResult(intent: Intent, request: Int) {
        try {
            startActivityForResult(intent, request)
        } catch (e: ActivityNotFoundException) {
            status.text = getString(R.string.no_app_for, intent.action)
        }
    }

    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        if (resultCode != RESULT_OK) return
        val uri = (if (requestCode == REQUEST_CAPTURE) captureUri else data?.data) ?: return
        status.text = getString(R.string.segmenting)
        worker.execute { segment(uri) }
    }

    /** Runs on the worker: decode, segment with the current engine, show the overlay and the figures. */
    private fun segment(uri: Uri) {
        val seg = segmenter
        val eng = engine
        if (seg == null || eng == null) {
            showStatus(getString(R.string.no_engine))
            return
        }
        val photo: RgbImage
        try {
            photo = Photos.decode(contentResolver, uri)
        } catch (e: IOException) {
            showStatus(getString(R.string.cannot_read, uri.toString(), e.message))
            return
        }
        val s =
            try {
                seg.segment(photo, eng)
            } catch (e: RuntimeException) {
                showStatus(getString(R.string.inference_failed, e.message))
                return
            }
        lastInput = s.input
        val overlay = Photos.toBitmap(s.overlay())
        val text =
            getString(
                R.string.result,
                s.area.pixels,
                photo.width * photo.height,
                String.format(Locale.US, "%.2f", s.area.percent),
                String.format(Locale.US, "%.1f", s.inferenceMs),
                String.format(Locale.US, "%.1f", s.preprocessMs),
                String.format(Locale.US, "%.1f", s.postprocessMs),
                s.engine,
            )
        ui {
            image.setImageBitmap(overlay)
            result.text = text
            status.text = getString(R.string.done)
        }
    }

    // --- benchmark ---------------------------------------------------------------------------------------------

    private fun benchmark() {
        val runs = runsField.text.toString().toIntOrNull()
        if (runs == null || runs < 1 || runs > MAX_RUNS) {
            status.text = getString(R.string.bad_runs, MAX_RUNS)
            return
        }
        cancelBenchmark.set(false)
        benchmarkButton.isEnabled = false
        worker.execute {
            try {
                runBenchmark(runs)
            } finally {
                ui { benchmarkButton.isEnabled = true }
            }
        }
    }

    /** Runs on the worker: N timed inferences on the last photo's tensor (or a grey image if there is none). */
    private fun runBenchmark(runs: Int) {
        val eng = engine
        val seg = segmenter
        if (eng == null || seg == null) {
            showStatus(getString(R.string.no_engine))
            return
        }
        val input = lastInput ?: seg.prepare(greyImage(seg.metadata))
        val r =
            try {
                BenchmarkRunner(System::nanoTime).run(
                    engine = eng.description,
                    warmup = WARMUP_RUNS,
                    runs = runs,
                    inference = { eng.run(input) },
                    onProgress = { done, total -> if (done % 10 == 0 || done == total) showProgress(done, total) },
                    cancelled = { cancelBenchmark.get() },
                )
            } catch (e: InterruptedException) {
                showStatus(getString(R.string.benchmark_cancelled))
                return
            } catch (e: RuntimeException) {
                showStatus(getString(R.string.inference_failed, e.message))
                return
            }
        val st = r.stats
        val f = { v: Double -> String.format(Locale.US, "%.2f", v) }
        val text =
            getString(
                R.string.benchmark_result,
                st.count,
                f(st.p50Ms),
                f(st.p90Ms),
                f(st.meanMs),
                f(st.minMs),
                f(r.firstMs),
                r.engine,
            )
        ui {
            benchmarkResult.text = text
            status.text = getString(R.string.done)
        }
    }

    private fun showProgress(done: Int, total: Int) = showStatus(getString(R.string.benchmark_progress, done, total))

    private fun greyImage(meta: ModelMetadata): RgbImage {
        val n = meta.inputWidth * meta.inputHeight * 3
        return RgbImage(meta.inputWidth, meta.inputHeight, ByteArray(n) { 128.toByte() })
    }

    companion object {
        const val MODEL_ASSET = "egeunet.tflite"
        const val CONTRACT_ASSET = "egeunet.json"
        private const val REQUEST_PICK = 1
        private const val REQUEST_CAPTURE = 2
        private const val WARMUP_RUNS = 5
        private const val MAX_RUNS = 10_000
    }
}
